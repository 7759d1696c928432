# Tests of Mirai.jl. They need libmirai on the loader path (or JULIA_MIRAI_LIB set to it):
#   bash scripts/install.sh "$HOME/.local" && JULIA_MIRAI_LIB=$HOME/.local/lib/libmirai.so \
#     julia --project=bindings/julia -e 'using Pkg; Pkg.test()'
using Test
using Mirai

@testset "Mirai.jl" begin
    @testset "no daemons" begin
        @test status() == (connections=0, daemons=0)
        @test daemons(0) == false
        @test_throws ErrorException mirai(+, 1, 2)
        @test_throws ErrorException daemons(-1)
    end

    @test daemons(2)
    @test status().connections == 2

    @testset "values, expressions and errors" begin
        m = mirai(+, 1, 2)
        @test m isa MiraiTask
        @test fetch(m) == 3
        @test isready(m) && !unresolved(m)
        @test fetch(@mirai sum(1:10)) == 55
        bad = mirai(error, "boom")
        err = try
            fetch(bad)
        catch e
            e
        end
        @test err isa MiraiError
        @test occursin("boom", err.message)
    end

    @testset "map and everywhere" begin
        mp = mirai_map(x -> x^2, 1:9)
        @test fetch.(mp) == (1:9) .^ 2
        copies = everywhere(getpid)
        @test length(copies) == 2
        @test length(unique(fetch.(copies))) == 2
    end

    @testset "cancellation and timeouts" begin
        slow = mirai(sleep, 60)
        while status().executing == 0
            sleep(0.01)
        end
        @test stop_mirai(slow)
        @test_throws ErrorValue fetch(slow)
        @test try fetch(slow) catch e e.code end == 20
        @test fetch(mirai(+, 2, 2)) == 4  # the daemon is still there
        late = mirai(sleep, 60; timeout=100)
        @test try fetch(late) catch e e.code end == 5
        fast = mirai(+, 1, 1)
        @test race_mirai([mirai(sleep, 5), fast]) == 2
    end

    @testset "counters" begin
        s = status()
        @test s.connections == 2 && s.cumulative == 2 && s.awaiting == 0
        @test s.completed >= 10
    end

    pending = mirai(sleep, 60)
    @test daemons(0) == false
    @test try fetch(pending) catch e e.code end == 19
    @test status().connections == 0
end
