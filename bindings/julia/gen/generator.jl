# Regenerates src/LibMirai.jl with Clang.jl, for those who have Julia:
#   julia --project=gen gen/generator.jl
# The committed file is produced by gen/generate.py (Python), which needs no Julia; both read
# gen/generator.toml. Expect cosmetic differences (Clang.jl uses CEnum.jl for enums).
using Clang.Generators

cd(@__DIR__)
options = load_options(joinpath(@__DIR__, "generator.toml"))
header = normpath(joinpath(@__DIR__, options["general"]["header"]))
args = get_default_args()
push!(args, "-I" * dirname(header))
ctx = create_context([header], args, options)
build!(ctx)
