# Reference L'Ecuyer-CMRG streams from R itself, for mirai-core's tests.
# Regenerate with: Rscript mirai-core/tests/data/r_rng_streams.R > mirai-core/tests/data/r_rng_streams.txt
# Each line: the seed, then .Random.seed after set.seed(seed, kind = "L'Ecuyer-CMRG") and after
# 1 to 4 calls of parallel::nextRNGStream (7 words each, as unsigned 32-bit integers).
library(parallel)
for (seed in c(1L, 1546L, 1234L, -7L, 2147483647L)) {
  set.seed(seed, kind = "L'Ecuyer-CMRG")
  s <- .Random.seed
  out <- s
  for (k in 1:4) {
    s <- nextRNGStream(s)
    out <- c(out, s)
  }
  cat(seed, sprintf("%.0f", ifelse(out < 0, out + 2^32, out)), "\n")
}
