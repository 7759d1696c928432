# Real client packages from Debian on this mirai: foreach + doParallel over make_cluster(),
# the parallel package's functions over a mirai cluster, and later/promises chains.
# Run: R_LIBS=<lib with mirai> Rscript bindings/r/tests/clients.R
# Needs r-cran-foreach, r-cran-doparallel, r-cran-later and r-cran-promises.
suppressPackageStartupMessages({
  library(mirai)
  library(parallel)
  library(foreach)
  library(doParallel)
  library(promises)
})

tests_dir <- dirname(normalizePath(sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE)[1L])))
source(file.path(tests_dir, "harness.R"))
# The message of the error `expr` raises, or NA when it raises none.
error_of <- function(expr) tryCatch({ expr; NA_character_ }, error = function(e) conditionMessage(e))

# ---- foreach + doParallel over a mirai cluster ------------------------------------------------
cl <- make_cluster(2)
registerDoParallel(cl)
check("doParallel sees the cluster's 2 workers", identical(getDoParWorkers(), 2L))
check("doParallel runs the SNOW backend on it", identical(getDoParName(), "doParallelSNOW"))

pids <- foreach(i = 1:6, .combine = c) %dopar% Sys.getpid()
check("%dopar% runs off the host process", length(pids) == 6L && !any(pids == Sys.getpid()))
check("%dopar% uses both daemons", length(unique(pids)) == 2L)
check(".combine = c", identical(foreach(i = 1:5, .combine = c) %dopar% (i^2), c(1, 4, 9, 16, 25)))
check("no .combine gives a list in order", identical(foreach(i = 1:3) %dopar% (i * 10L), list(10L, 20L, 30L)))
m <- foreach(i = 1:3, .combine = rbind) %dopar% c(i, i^2)
check(".combine = rbind", is.matrix(m) && identical(unname(m), rbind(c(1, 1), c(2, 4), c(3, 9))))
check(".combine = cbind", identical(unname(foreach(i = 1:2, .combine = cbind) %dopar% c(i, -i)), cbind(c(1L, -1L), c(2L, -2L))))
check(".combine = '+'", identical(foreach(i = 1:100, .combine = "+") %dopar% i, 5050L))
# A custom combiner, pairwise and with .multicombine.
keep_max <- function(a, b) if (a$v >= b$v) a else b
best <- foreach(i = c(3, 9, 4, 1), .combine = keep_max) %dopar% list(i = i, v = (i - 5)^2)
check("custom .combine function", identical(best, list(i = 9, v = 16)))
glued <- foreach(i = 1:4, .combine = function(...) paste(..., sep = "-"), .multicombine = TRUE) %dopar% letters[i]
check("custom .combine with .multicombine", identical(glued, "a-b-c-d"))
check(".init with .combine", identical(foreach(i = 1:3, .combine = c, .init = 0L) %dopar% i, 0:3))
# Order of results is the iteration order even when later iterations finish first.
slow_first <- foreach(i = 1:4, .combine = c) %dopar% { Sys.sleep(0.2 * (i == 1)); i }
check("results keep iteration order", identical(slow_first, 1:4))

# .export: get() hides the names from foreach's automatic export, so only .export ships them.
local({
  scale <- 7
  times_scale <- function(x) x * get("scale")
  check("without .export the workers lack a local variable",
        grepl("scale", error_of(foreach(i = 1:2, .combine = c) %dopar% get("times_scale")(i))))
  check(".export ships a local variable and function",
        identical(foreach(i = 1:3, .combine = c, .export = c("scale", "times_scale")) %dopar% get("times_scale")(i),
                  c(7, 14, 21)))
})
# foreach's automatic export of a variable the body names.
offset <- 100
check("automatic export of a global the body uses", identical(foreach(i = 1:2, .combine = c) %dopar% (i + offset), c(101, 102)))

# Errors in the loop.
msg <- error_of(foreach(i = 1:3) %dopar% { if (i == 2) stop("bad iteration ", i); i })
check(".errorhandling = 'stop' raises an R error with the message", grepl("bad iteration 2", msg, fixed = TRUE))
check("the error names the failing task", grepl("task 2 failed", msg, fixed = TRUE))
passed_errs <- foreach(i = 1:3, .errorhandling = "pass") %dopar% { if (i == 2) stop("bad iteration ", i); i }
check(".errorhandling = 'pass' keeps the condition in place",
      length(passed_errs) == 3L && identical(passed_errs[c(1, 3)], list(1L, 3L)) &&
        inherits(passed_errs[[2]], "error") && identical(conditionMessage(passed_errs[[2]]), "bad iteration 2"))
check(".errorhandling = 'remove' drops the failed iteration",
      identical(foreach(i = 1:4, .combine = c, .errorhandling = "remove") %dopar% { if (i %% 2 == 0) stop("even"); i },
                c(1L, 3L)))
check("a loop that fails everywhere with 'remove' is empty",
      is.null(foreach(i = 1:2, .combine = c, .errorhandling = "remove") %dopar% stop("all")))

# .packages: splines is not attached on a worker until foreach attaches it.
check("splines is not attached on the workers by default",
      !any(foreach(i = 1:2, .combine = c) %dopar% ("package:splines" %in% search())))
on_workers <- foreach(i = 1:2, .combine = c, .packages = "splines") %dopar% ("package:splines" %in% search())
check(".packages attaches the package on the workers", identical(on_workers, c(TRUE, TRUE)))
knots <- foreach(i = 1:2, .packages = c("splines", "stats")) %dopar% dim(bs(seq(0, 1, length.out = 5 * i), df = 4))
check(".packages functions are usable unqualified", identical(knots, list(c(5L, 4L), c(10L, 4L))))
sds <- foreach(x = list(c(1, 3), c(2, 2, 8)), .combine = c, .packages = "stats") %dopar% sd(x)
check(".packages = 'stats'", isTRUE(all.equal(sds, c(sd(c(1, 3)), sd(c(2, 2, 8))))))
# Nested foreach with %:% flattens into one set of tasks.
grid <- foreach(a = 1:2, .combine = rbind) %:% foreach(b = 1:3, .combine = c) %dopar% (a * 10 + b)
check("nested %:% loops", identical(unname(grid), rbind(c(11, 12, 13), c(21, 22, 23))))
# An iterator from the iterators package.
check("iterators::icount", identical(foreach(i = iterators::icount(4), .combine = c) %dopar% (i * 2L), c(2L, 4L, 6L, 8L)))

registerDoSEQ()
stop_cluster(cl)
check("the stopped cluster refuses work", !is.na(error_of(parLapply(cl, 1:2, identity))))

# ---- parallel functions over a mirai cluster ------------------------------------------------
cl <- make_cluster(2)
check("parLapply", identical(parLapply(cl, 1:5, function(x) x^2), as.list((1:5)^2)))
check("parSapply", identical(parSapply(cl, 1:5, function(x) x * 2L), (1:5) * 2L))
check("parSapply simplifies to a matrix", identical(parSapply(cl, 1:3, function(x) c(x, -x)), sapply(1:3, function(x) c(x, -x))))
check("parSapply with USE.NAMES", identical(parSapply(cl, c("a", "bb"), nchar), c(a = 1L, bb = 2L)))
check("clusterApply", identical(clusterApply(cl, 1:3, function(x, y) x + y, y = 10), list(11, 12, 13)))
check("clusterApplyLB", identical(clusterApplyLB(cl, 1:7, function(x) x * 3L), as.list((1:7) * 3L)))
lb <- clusterApplyLB(cl, c(0.4, 0.05, 0.05, 0.05), function(s) { Sys.sleep(s); Sys.getpid() })
check("clusterApplyLB balances: short tasks go to the free daemon", length(unique(unlist(lb))) == 2L &&
        sum(unlist(lb) == lb[[1]]) == 1L)
check("parLapplyLB", identical(parLapplyLB(cl, 1:6, function(x) x - 1L), as.list(0:5)))
check("parSapplyLB", identical(parSapplyLB(cl, 1:4, function(x) x / 2), (1:4) / 2))
evq <- clusterEvalQ(cl, { node_value <- 5; Sys.getpid() })
check("clusterEvalQ reaches both daemons", length(evq) == 2L && length(unique(unlist(evq))) == 2L &&
        !any(unlist(evq) == Sys.getpid()))
check("clusterEvalQ state persists on the daemons", identical(clusterEvalQ(cl, node_value), list(5, 5)))
local({
  shared_constant <- 42L
  clusterExport(cl, "shared_constant", envir = environment())
})
check("clusterExport of a local variable", identical(clusterEvalQ(cl, shared_constant), list(42L, 42L)))
check("clusterExport: parSapply uses it",
      identical(parSapply(cl, 1:4, function(x) x + shared_constant), 43:46))
check("clusterMap", identical(clusterMap(cl, function(a, b) a * b, 1:4, 5:8), list(5L, 12L, 21L, 32L)))
check("clusterMap with MoreArgs and SIMPLIFY",
      identical(clusterMap(cl, function(a, b, k) a + b + k, 1:3, 4:6, MoreArgs = list(k = 100L), SIMPLIFY = TRUE),
                c(105L, 107L, 109L)))
mat <- matrix(1:12, nrow = 3)
check("parApply over rows", identical(parApply(cl, mat, 1, sum), apply(mat, 1, sum)))
check("parApply over columns", identical(parApply(cl, mat, 2, max), apply(mat, 2, max)))
check("parRapply", identical(parRapply(cl, mat, sum), apply(mat, 1, sum)))
check("parCapply", identical(parCapply(cl, mat, prod), apply(mat, 2, prod)))
check("clusterCall gives one value per node", identical(clusterCall(cl, function(a, b) a * b, 6, 7), list(42, 42)))
check("clusterCall runs on both daemons", length(unique(unlist(clusterCall(cl, Sys.getpid)))) == 2L)
check("clusterSplit", identical(clusterSplit(cl, 1:6), list(1:3, 4:6)))
msg <- error_of(parLapply(cl, 1:2, function(x) stop("node failure ", x)))
check("an error on a node is an R error with its message", grepl("node failure 1", msg, fixed = TRUE))
check("the cluster still works after a node's error", identical(parSapply(cl, 1:2, function(x) x), 1:2))

# clusterSetRNGStream: a node's stream is only reproducible if the node runs on the same
# daemon each time (see the report); one node makes the mapping trivial and the check exact.
draw <- function(cl) parSapply(cl, 1:4, function(i) runif(1))
clusterSetRNGStream(cl, 123)
r1 <- draw(cl)
clusterSetRNGStream(cl, 123)
r2 <- draw(cl)
clusterSetRNGStream(cl, 321)
r3 <- draw(cl)
# The two L'Ecuyer-CMRG streams for seed 123, computed here: node k's chunk draws from stream k.
local_streams <- local({
  old <- RNGkind("L'Ecuyer-CMRG")[1]
  set.seed(123)
  s1 <- .Random.seed
  s2 <- nextRNGStream(s1)
  draws <- lapply(list(s1, s2), function(s) { assign(".Random.seed", s, envir = globalenv()); runif(2) })
  RNGkind(old)
  draws
})
check("clusterSetRNGStream: the same seed gives the same draws", identical(sort(r1), sort(r2)))
check("clusterSetRNGStream: the draws are the seed's L'Ecuyer streams",
      isTRUE(all.equal(sort(r1), sort(unlist(local_streams)))))
check("clusterSetRNGStream: another seed gives other draws", !any(r3 %in% r1))
stop_cluster(cl)
cl1 <- make_cluster(1)
clusterSetRNGStream(cl1, 2024)
a1 <- parSapply(cl1, 1:3, function(i) rnorm(1))
clusterSetRNGStream(cl1, 2024)
a2 <- parSapply(cl1, 1:3, function(i) rnorm(1))
check("clusterSetRNGStream reproducible in order on a 1-node cluster", identical(a1, a2) && length(unique(a1)) == 3L)
stop_cluster(cl1)

# ---- later / promises -----------------------------------------------------------------------
daemons(2)
# Runs later's event loop until `done()` or `timeout` seconds; TRUE if done.
wait_until <- function(done, timeout = 10) {
  deadline <- Sys.time() + timeout
  while (!done() && Sys.time() < deadline) later::run_now(0.05)
  done()
}

got <- NULL
as.promise(mirai({ Sys.sleep(0.3); 20 })) %>%
  then(function(x) x + 1) %>%
  then(function(x) got <<- x * 2)
check("then() is not run before the event loop turns", is.null(got))
check("as.promise(mirai) then chain settles", wait_until(function() !is.null(got)) && identical(got, 42))

got <- NULL
mirai(paste(Sys.getpid(), "ran")) %...>% (function(x) strsplit(x, " ")[[1]]) %...>% (function(x) got <<- x)
check("%...>% on a mirai directly", wait_until(function() !is.null(got)) &&
        identical(got[2], "ran") && got[1] != as.character(Sys.getpid()))

got <- NULL
m <- mirai(5L)
call_mirai(m)
p <- as.promise(m)
check("as.promise is cached on the mirai", identical(p, as.promise(m)))
p %...>% (function(x) got <<- x)
check("a resolved mirai's promise still waits for the event loop", is.null(got))
check("a resolved mirai's promise fulfils", wait_until(function() !is.null(got)) && identical(got, 5L))

got <- NULL
mp <- mirai_map(1:5, function(x) { Sys.sleep(0.05 * (6 - x)); x * 10L })
as.promise(mp) %...>% (function(v) got <<- v)
check("as.promise(mirai_map) resolves to every value, in order",
      wait_until(function() !is.null(got)) && identical(got, as.list((1:5) * 10L)))

got <- NULL
promise_all(a = as.promise(mirai(1)), b = as.promise(mirai({ Sys.sleep(0.2); 2 }))) %...>% (function(v) got <<- v)
check("promise_all of named mirai promises", wait_until(function() !is.null(got)) && identical(got, list(a = 1, b = 2)))

got <- NULL
promise_race(as.promise(mirai({ Sys.sleep(3); "slow" })), as.promise(mirai("fast"))) %...>% (function(v) got <<- v)
check("promise_race takes the first mirai to finish", wait_until(function() !is.null(got), 5) && identical(got, "fast"))

# Rejections: an error in the mirai reaches catch(), the fulfilled branch is skipped, and
# finally() runs either way.
caught <- NULL
fulfilled <- FALSE
finished <- FALSE
as.promise(mirai(stop("deliberate mirai failure"))) %>%
  then(function(x) fulfilled <<- TRUE) %>%
  catch(function(e) caught <<- e) %>%
  finally(function() finished <<- TRUE)
check("a mirai error rejects: catch() gets it", wait_until(function() finished) && inherits(caught, "error"))
check("the rejection carries the mirai's message", grepl("deliberate mirai failure", conditionMessage(caught), fixed = TRUE))
check("the fulfilled branch is skipped on rejection", !fulfilled)
check("finally() ran after the rejection", finished)

onrej <- NULL
mirai(stop("second failure")) %...!% (function(e) onrej <<- conditionMessage(e))
check("%...!% handles a mirai error", wait_until(function() !is.null(onrej)) && grepl("second failure", onrej, fixed = TRUE))

finished <- FALSE
value_after <- NULL
as.promise(mirai("fine")) %>% finally(function() finished <<- TRUE) %...>% (function(v) value_after <<- v)
check("finally() runs on fulfilment and passes the value on",
      wait_until(function() !is.null(value_after)) && finished && identical(value_after, "fine"))

recovered <- NULL
as.promise(mirai(stop("recoverable"))) %>% catch(function(e) "recovered") %...>% (function(v) recovered <<- v)
check("a catch() value continues the chain", wait_until(function() !is.null(recovered)) && identical(recovered, "recovered"))

caught <- NULL
as.promise(mirai_map(1:3, function(x) if (x == 2) stop("map element failed") else x)) %...!%
  (function(e) caught <<- conditionMessage(e))
check("a failing mirai_map element rejects the map's promise",
      wait_until(function() !is.null(caught)) && grepl("map element failed", caught, fixed = TRUE))

caught <- NULL
mirai(Sys.sleep(5), .timeout = 200) %...!% (function(e) caught <<- conditionMessage(e))
check("a timed-out mirai rejects", wait_until(function() !is.null(caught)) && grepl("Timed out", caught, fixed = TRUE))

# While a mirai is pending, later's loop keeps running other callbacks.
ticks <- 0L
got <- NULL
tick <- function() { ticks <<- ticks + 1L; if (is.null(got)) later::later(tick, 0.05) }
later::later(tick, 0.05)
as.promise(mirai({ Sys.sleep(0.5); "late" })) %...>% (function(v) got <<- v)
check("other later callbacks run while a mirai is pending", wait_until(function() !is.null(got)) && ticks >= 4L)

# Many promises at once settle, each with its own value.
vals <- list()
for (i in 1:20) local({
  j <- i
  as.promise(mirai(j * j, j = j)) %...>% (function(v) vals[[as.character(j)]] <<- v)
})
check("20 concurrent mirai promises settle with their own values",
      wait_until(function() length(vals) == 20L) && identical(unlist(vals[as.character(1:20)], use.names = FALSE), (1:20) * (1:20)))

daemons(0)
check("daemons are reset at the end", !daemons_set())

finish("clients")
