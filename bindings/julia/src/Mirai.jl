"""
    Mirai

Minimalist async evaluation for Julia on libmirai: persistent daemon processes, a FIFO
dispatcher, cancellation and timeouts. Payloads are Julia's own `Serialization` format, so a
Julia daemon serves Julia hosts (hosts and daemons of other languages each speak their own
payload format over the same protocol).
"""
module Mirai

using Serialization
using FileWatching

include("LibMirai.jl")
using .LibMirai

export daemons, daemon, mirai, @mirai, mirai_map, everywhere, status, stop_mirai, race_mirai,
    unresolved, MiraiTask, MiraiError, MiraiInterrupt, ErrorValue

# ---------------------------------------------------------------------------------------------
# Errors

"""An error raised while evaluating on a daemon: its message and the daemon's backtrace."""
struct MiraiError <: Exception
    message::String
    backtrace::String
end
Base.showerror(io::IO, e::MiraiError) = print(io, "MiraiError: ", e.message)

"""Evaluation on the daemon was interrupted (the task was cancelled while running)."""
struct MiraiInterrupt <: Exception end

const ERROR_TEXT = Dict{Int32,String}(5 => "Timed out", 7 => "Object closed",
    19 => "Connection reset", 20 => "Operation canceled")

"""A task resolved without a result: 5 timed out, 19 connection reset, 20 cancelled."""
struct ErrorValue <: Exception
    code::Int32
end
Base.showerror(io::IO, e::ErrorValue) =
    print(io, "errorValue ", e.code, " | ", get(ERROR_TEXT, e.code, "Error"))

function last_error()
    buf = Vector{UInt8}(undef, 1024)
    n = mirai_last_error(buf, length(buf))
    String(buf[1:min(n, length(buf) - 1)])
end

function check(r::mirai_result)
    r == MIRAI_RESULT_OK || error("mirai: ", r, ": ", last_error())
    nothing
end

# ---------------------------------------------------------------------------------------------
# Compute profiles

mutable struct Profile
    host::Ptr{mirai_host}
    # Options of every submission (notify on; the timeout set, under `lock`, before each), so a
    # submission allocates none.
    submit_options::Ptr{mirai_submit_options}
    url::String
    events::Dict{UInt64,Base.Event}
    lock::ReentrantLock
    fdwatcher::FDWatcher
    watcher::Union{Task,Nothing}
end

const PROFILES = Dict{String,Profile}()

function profile(compute::AbstractString)
    p = get(PROFILES, compute, nothing)
    p === nothing && error(compute == "default" ? "No daemons set." :
                           "No daemons set for the '$compute' compute profile.")
    p
end

"""
Wakes the tasks whose results landed: waits for libmirai's completion fd to become readable
(an `FDWatcher`, no polling), then takes the queued completion ids. Ends when the watcher is
closed by `daemons(0)`.
"""
function watch(p::Profile)
    ids = Vector{UInt64}(undef, 256)
    n = Ref{Csize_t}(0)
    while true
        try
            wait(p.fdwatcher)
        catch
            return  # closed
        end
        while true
            check(mirai_host_take_completions(p.host, ids, length(ids), n))
            lock(p.lock) do
                for id in view(ids, 1:n[])
                    event = pop!(p.events, id, nothing)
                    event === nothing || notify(event)
                end
            end
            n[] < length(ids) && break
        end
    end
end

"""
    daemons(n; url=nothing, compute="default", command=nothing)

Sets up the `compute` profile: a host listening at `url` (a local IPC address by default) with
`n` local Julia daemons, and waits until all are connected. `daemons(0)` closes the profile:
unresolved tasks resolve to `ErrorValue(19)` and the daemons exit. With `url` given, `n` may be
0 and daemons launched elsewhere dial it (they need `MIRAI_SECRET`; see `status`).
"""
function daemons(n::Integer; url=nothing, compute::AbstractString="default", command=nothing)
    if n == 0 && url === nothing
        p = pop!(PROFILES, compute, nothing)
        p === nothing && return false
        close(p.fdwatcher)
        p.watcher === nothing || wait(p.watcher)
        mirai_host_free(p.host)
        mirai_submit_options_free(p.submit_options)
        return false
    end
    n < 0 && error("`n` must be zero or greater")
    haskey(PROFILES, compute) && daemons(0; compute)
    address = url === nothing ? "abstract://mirai-jl-$(getpid())-$(rand(UInt32))" : String(url)
    out = Ref{Ptr{mirai_host}}(C_NULL)
    check(mirai_host_listen(address, C_NULL, out))
    opts = mirai_submit_options_new()
    opts == C_NULL && (mirai_host_free(out[]); error("mirai: cannot allocate submit options"))
    check(mirai_submit_options_set_notify(opts, true))
    fd = RawFD(mirai_host_completion_fd(out[]))
    p = Profile(out[], opts, unsafe_string(mirai_host_url(out[])), Dict{UInt64,Base.Event}(),
                ReentrantLock(), FDWatcher(fd, true, false), nothing)
    p.watcher = @async watch(p)
    PROFILES[compute] = p
    if n > 0
        argv = command === nothing ? default_command() : String.(command)
        push!(argv, "{url}")
        check(mirai_host_launch_local(p.host, argv, length(argv), n, true))
        check(mirai_host_wait_connections(p.host, n, -1))
    end
    true
end

daemons(; kwargs...) = error("`n` must be numeric, did you mean to provide `url`?")

"""The command that starts a local Julia daemon (this Julia, this project)."""
function default_command()
    julia = Base.julia_cmd()
    [julia.exec..., "--startup-file=no", "--project=$(Base.active_project())",
     "-e", "using Mirai; Mirai.daemon(ARGS[1])"]
end

"""
    status(compute="default")

Counters of the profile: `connections`, `cumulative`, `awaiting`, `executing`, `completed`, and
its `url`.
"""
function status(compute::AbstractString="default")
    p = get(PROFILES, compute, nothing)
    p === nothing && return (connections=0, daemons=0)
    c = Ref{mirai_counters}()
    check(mirai_host_counters(p.host, c))
    (connections=Int(c[].connections), cumulative=Int(c[].cumulative), awaiting=Int(c[].awaiting),
     executing=Int(c[].executing), completed=Int(c[].completed), url=p.url)
end

# ---------------------------------------------------------------------------------------------
# Tasks

"""An asynchronous evaluation on a daemon. `fetch` waits for its value; `isready` never blocks."""
mutable struct MiraiTask
    ptr::Ptr{mirai_task}
    profile::Profile
    event::Base.Event
    value::Any
    taken::Bool
    function MiraiTask(ptr::Ptr{mirai_task}, p::Profile, event::Base.Event)
        t = new(ptr, p, event, nothing, false)
        finalizer(t -> mirai_task_free(t.ptr), t)
    end
end

Base.show(io::IO, t::MiraiTask) = print(io, isready(t) ? "< mirai [\$data] >" : "< mirai [] >")

function submit(payload::Vector{UInt8}, compute::AbstractString, timeout)
    p = profile(compute)
    out = Ref{Ptr{mirai_task}}(C_NULL)
    event = Base.Event()
    lock(p.lock) do
        check(mirai_submit_options_set_timeout_ms(p.submit_options,
                                                  timeout === nothing ? -1 : Int64(timeout)))
        check(mirai_host_submit(p.host, payload, length(payload), p.submit_options, out))
        p.events[mirai_task_id(out[])] = event
    end
    t = MiraiTask(out[], p, event)
    # Resolved before its event was registered (or during): signal it ourselves.
    mirai_task_is_resolved(t.ptr) && notify(event)
    t
end

pack(x) = (io = IOBuffer(); serialize(io, x); take!(io))

"""
    mirai(f, args...; timeout=nothing, compute="default")

Evaluates `f(args...)` on a daemon and returns a `MiraiTask` at once. `f` must be defined on the
daemon (Base functions are; define others with `everywhere`). `timeout` is in milliseconds.
"""
mirai(f, args...; timeout=nothing, compute::AbstractString="default") =
    submit(pack((:call, f, args)), compute, timeout)

"""
    @mirai expr

Evaluates `expr` on a daemon, in its `Main` module (a clean environment: pass what it needs).
"""
macro mirai(ex)
    :(submit(pack((:expr, $(QuoteNode(ex)), ())), "default", nothing))
end

Base.isready(t::MiraiTask) = mirai_task_is_resolved(t.ptr)
unresolved(t::MiraiTask) = !isready(t)

function Base.wait(t::MiraiTask)
    isready(t) || wait(t.event)
    nothing
end

function Base.fetch(t::MiraiTask)
    wait(t)
    if !t.taken
        status = Ref{mirai_status}()
        code = Ref{Int32}(0)
        check(mirai_task_status(t.ptr, status, code))
        bytes = Ref(mirai_bytes(C_NULL, 0))
        check(mirai_task_take_result(t.ptr, bytes))
        data = copy(unsafe_wrap(Array, bytes[].data, bytes[].len))
        mirai_bytes_free(bytes)
        t.value = status[] == MIRAI_STATUS_FAILED ? ErrorValue(code[]) : deserialize(IOBuffer(data))
        t.taken = true
    end
    t.value isa Exception && throw(t.value)
    t.value
end

"""Cancels a task: returns true if it was queued or running (it resolves to `ErrorValue(20)`)."""
stop_mirai(t::MiraiTask) = mirai_task_cancel(t.ptr)

"""Index of the first resolved task in `tasks` (in list order), waiting until one resolves;
0 for an empty list."""
function race_mirai(tasks::AbstractVector{MiraiTask})
    isempty(tasks) && return 0
    i = findfirst(isready, tasks)
    i === nothing || return i
    first_done = Channel{Int}(length(tasks))
    for (k, t) in enumerate(tasks)
        @async (wait(t); put!(first_done, k))
    end
    take!(first_done)
    findfirst(isready, tasks)
end

"""
    mirai_map(f, xs; compute="default")

One `mirai(f, x)` per element; `fetch.(result)` collects in order.
"""
mirai_map(f, xs; compute::AbstractString="default") = [mirai(f, x; compute) for x in xs]

"""
    everywhere(f, args...; compute="default")

Runs `f(args...)` once on every connected daemon (e.g. to define functions or load packages),
and returns the tasks.
"""
function everywhere(f, args...; compute::AbstractString="default", min::Integer=1)
    p = profile(compute)
    payload = pack((:call, f, args))
    out = Ref{Ptr{Ptr{mirai_task}}}(C_NULL)
    n = Ref{Csize_t}(0)
    check(mirai_host_everywhere(p.host, payload, length(payload), min, out, n))
    # Each MiraiTask owns a handle of its own; the array and its handles go back to libmirai.
    tasks = map(unsafe_wrap(Array, out[], n[])) do ptr
        e = Base.Event()
        lock(() -> (p.events[mirai_task_id(ptr)] = e), p.lock)
        t = MiraiTask(mirai_task_clone(ptr), p, e)
        isready(t) && notify(e)
        t
    end
    mirai_task_array_free(out[], n[])
    tasks
end

# ---------------------------------------------------------------------------------------------
# Daemons

const DAEMON_ID = Ref{UInt64}(0)

function _init(::Ptr{Cvoid}, id::UInt64, ::Ptr{UInt32}, ::Ptr{UInt8}, ::Csize_t)::Cvoid
    DAEMON_ID[] = id
    nothing
end

run_job(job) = job[1] === :expr ? Core.eval(Main, job[2]) : job[2](job[3]...)

function _evaluate(::Ptr{Cvoid}, data::Ptr{UInt8}, len::Csize_t, ::Bool, ::Ptr{mirai_interrupt},
                   out::Ptr{mirai_output})::mirai_eval_status
    status, result = try
        job = deserialize(IOBuffer(unsafe_wrap(Array, data, len)))
        (MIRAI_EVAL_STATUS_VALUE, Base.invokelatest(run_job, job))
    catch e
        if e isa InterruptException
            (MIRAI_EVAL_STATUS_INTERRUPTED, MiraiInterrupt())
        else
            (MIRAI_EVAL_STATUS_ERROR,
             MiraiError(sprint(showerror, e), sprint(Base.show_backtrace, catch_backtrace())))
        end
    end
    bytes = try
        pack(result)
    catch e
        status = MIRAI_EVAL_STATUS_ERROR
        pack(MiraiError("result could not be serialized: " * sprint(showerror, e), ""))
    end
    mirai_output_set(out, bytes, length(bytes))
    status
end

"""
    daemon(url; maxtasks=0, idletime=-1, walltime=-1, autoexit=true, retry=false)

Runs a daemon in this Julia process until a limit is reached or the host goes; returns the exit
code (0 connection ended, 1 idle time, 2 wall time, 3 max tasks). Evaluation happens on this
task. Cancelling a running task raises `InterruptException` in it: libmirai calls C's `raise`
with SIGINT from its I/O thread, which Julia turns into an interrupt.
"""
function daemon(url::AbstractString; maxtasks::Integer=0, idletime::Integer=-1,
                walltime::Integer=-1, autoexit=true, retry::Bool=false)
    Base.exit_on_sigint(false)
    mode = autoexit === true ? MIRAI_AUTOEXIT_EXIT :
           autoexit === missing ? MIRAI_AUTOEXIT_FINISH_TASK : MIRAI_AUTOEXIT_STAY
    opts = mirai_daemon_options_new()
    opts == C_NULL && error("mirai: cannot allocate daemon options")
    try
        check(mirai_daemon_options_set_retry(opts, retry))
        check(mirai_daemon_options_set_autoexit(opts, Int32(mode), 200))
        # 0 tasks and negative times are this function's "no limit": nothing to set.
        maxtasks > 0 && check(mirai_daemon_options_set_maxtasks(opts, maxtasks))
        idletime >= 0 && check(mirai_daemon_options_set_idletime_ms(opts, idletime))
        walltime >= 0 && check(mirai_daemon_options_set_walltime_ms(opts, walltime))
        run_daemon(url, opts)
    finally
        mirai_daemon_options_free(opts)
    end
end

function run_daemon(url::AbstractString, opts::Ptr{mirai_daemon_options})
    init = @cfunction(_init, Cvoid, (Ptr{Cvoid}, UInt64, Ptr{UInt32}, Ptr{UInt8}, Csize_t))
    evaluate = @cfunction(_evaluate, mirai_eval_status,
                          (Ptr{Cvoid}, Ptr{UInt8}, Csize_t, Bool, Ptr{mirai_interrupt},
                           Ptr{mirai_output}))
    # userdata doubles as raise()'s argument: SIGINT (2 on Linux and macOS). The other
    # callbacks ignore it.
    sigint = 2
    ev = Ref(mirai_evaluator(Ptr{Cvoid}(sigint), init, evaluate, C_NULL, cglobal(:raise)))
    code = Ref{Int32}(0)
    check(mirai_daemon_run(url, opts, ev, code))
    Int(code[])
end

end # module
