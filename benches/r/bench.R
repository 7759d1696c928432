# Benchmarks of the R package on libmirai, the same measurements as ../shared/bench/README.md
# reports for R's mirai 2.7.1 on this kind of machine, each against issue #17's target (five
# times R's mirai) where it has one.
# Run: R CMD INSTALL bindings/r && Rscript benches/r/bench.R
library(mirai)

timed <- function(expr) { t0 <- Sys.time(); force(expr); as.numeric(Sys.time() - t0, units = "secs") }

# One line per figure: the value, then the target and whether it is met.
report <- function(what, value, unit, target = NULL, higher = TRUE) {
  verdict <- if (is.null(target)) "" else {
    met <- if (higher) value >= target else value <= target
    sprintf("  (target %s %s %s: %s)", if (higher) ">=" else "<=", format(target), unit, if (met) "met" else "MISSED")
  }
  cat(sprintf("%-58s %10.1f %s%s\n", what, value, unit, verdict))
}

round_trips <- function(what, target = NULL) {
  for (i in 1:200) mirai(1)[]
  rt <- vapply(1:2000, function(i) timed(mirai(1)[]), numeric(1))
  report(paste(what, "median"), median(rt) * 1e6, "µs", target, higher = FALSE)
  cat(sprintf("%-58s p99 %.0f µs, min %.0f µs\n", "", quantile(rt, 0.99) * 1e6, min(rt) * 1e6))
}

# Megabytes per second of round trips of `x` (the median of 3), its size taken as `mb`; the
# value is checked once, outside the timing.
payload_rate <- function(x, mb) {
  stopifnot(identical(mirai(x, x = x)[], x))
  mb / median(replicate(3, timed(mirai(x, x = x)[])))
}

# Peak resident memory of a process in MB (VmHWM), and resetting it (clear_refs 5), on Linux.
peak_mb <- function(pid = Sys.getpid()) {
  line <- grep("^VmHWM", readLines(sprintf("/proc/%d/status", pid)), value = TRUE)
  as.numeric(gsub("[^0-9]", "", line)) / 1024
}
reset_peak <- function() invisible(writeLines("5", "/proc/self/clear_refs"))

report("daemons(2) until both connected", 1e3 * median(replicate(5, { t <- timed(daemons(2)); daemons(0); t })), "ms")
report("daemons(0) teardown, 2 daemons", 1e3 * median(replicate(5, { daemons(2); timed(daemons(0)) })), "ms")

daemons(1)
round_trips("mirai(1)[] round trip, abstract socket:", target = 52)
daemons(0)

daemons(url = "tcp://127.0.0.1:0")
invisible(launch_local(1))
while (status()$connections < 1L) Sys.sleep(0.01)
round_trips("mirai(1)[] round trip, tcp://127.0.0.1:")
daemons(0)

daemons(url = "tls+tcp://127.0.0.1:0")
invisible(launch_local(1))
while (status()$connections < 1L) Sys.sleep(0.01)
round_trips("mirai(1)[] round trip, tls+tcp://127.0.0.1:")
report("100 MB raw vector round trip, tls+tcp", payload_rate(as.raw(seq_len(1e8) %% 256), 100), "MB/s")
daemons(0)

daemons(2)
t <- timed({ ms <- lapply(1:20000, function(i) mirai(1)); for (m in ms) m[] })
report("20,000 x mirai(1) then collect, 2 daemons", 20000 / t, "tasks/s", target = 35000)
report("mirai_map(1:10000, function(x) x)[], 2 daemons", timed(mirai_map(1:10000, function(x) x)[]), "s",
       target = 0.35, higher = FALSE)
daemons(0)

daemons(1)
raw100 <- as.raw(seq_len(1e8) %% 256)
report("100 MB raw vector round trip", payload_rate(raw100, 100), "MB/s", target = 1300)
# Peak memory over one more round trip, from what each process holds before it (the payload
# itself is 100 MB of the host's); the target is 2.5x the payload.
daemon_pid <- mirai(Sys.getpid())[]
invisible(gc())
invisible(mirai({ gc(); writeLines("5", "/proc/self/clear_refs") })[])
reset_peak()
invisible(mirai(x, x = raw100)[])
report("  peak RSS of the host over one", peak_mb(), "MB", target = 250, higher = FALSE)
report("  peak RSS of the daemon over one", peak_mb(daemon_pid), "MB", target = 250, higher = FALSE)
rm(raw100)
# Materialised vectors: seq_len() and its conversions are ALTREP sequences, which serialize as
# three numbers.
report("100 MB numeric vector (1.25e7 doubles) round trip", payload_rate(runif(1.25e7), 100), "MB/s", target = 800)
report("1e7-element numeric vector (80 MB) round trip", payload_rate(rnorm(1e7), 80), "MB/s")
df <- data.frame(id = sample.int(1e5), x = runif(1e5), g = sample(letters, 1e5, TRUE), stringsAsFactors = FALSE)
stopifnot(identical(mirai(df, df = df)[], df))
report("100,000-row data frame (int, double, character) round trip",
       1e3 * median(replicate(5, timed(mirai(df, df = df)[]))), "ms")
daemons(0)
