# Benchmarks of the R package on libmirai, the same measurements as ../shared/bench/README.md
# reports for R's mirai 2.7.1 on this kind of machine.
# Run: R CMD INSTALL bindings/r && Rscript benches/r/bench.R
library(mirai)

median_us <- function(times) sprintf("median %.0f µs, p99 %.0f µs, min %.0f µs",
                                     median(times) * 1e6, quantile(times, 0.99) * 1e6, min(times) * 1e6)
timed <- function(expr) { t0 <- Sys.time(); force(expr); as.numeric(Sys.time() - t0, units = "secs") }

cat("daemons(2) until both connected:", sprintf("%.1f ms", 1e3 * median(replicate(5, { t <- timed(daemons(2)); daemons(0); t }))), "\n")
cat("daemons(0) teardown:", sprintf("%.2f ms", 1e3 * median(replicate(5, { daemons(2); timed(daemons(0)) }))), "\n")

daemons(1)
for (i in 1:200) mirai(1)[]
rt <- vapply(1:2000, function(i) timed(mirai(1)[]), numeric(1))
cat("mirai(1)[] round trip, 1 daemon, abstract socket:", median_us(rt), "\n")
daemons(0)

daemons(url = "tcp://127.0.0.1:0")
launch_local(1)
while (status()$connections < 1L) Sys.sleep(0.01)
for (i in 1:200) mirai(1)[]
rt <- vapply(1:2000, function(i) timed(mirai(1)[]), numeric(1))
cat("mirai(1)[] round trip, 1 daemon, tcp://127.0.0.1:", median_us(rt), "\n")
daemons(0)

daemons(2)
t <- timed({ ms <- lapply(1:20000, function(i) mirai(1)); for (m in ms) m[] })
cat(sprintf("20,000 x mirai(1) then collect, 2 daemons: %.0f tasks/s\n", 20000 / t))
t <- timed(mirai_map(1:10000, function(x) x)[])
cat(sprintf("mirai_map(1:10000, function(x) x)[], 2 daemons: %.2f s\n", t))
daemons(0)

daemons(1)
x <- as.raw(seq_len(1e8) %% 256)
mirai(length(x), x = x)[]
t <- median(replicate(3, timed(mirai(x, x = x)[])))
cat(sprintf("100 MB raw vector round trip, 1 daemon: %.0f MB/s\n", 100 / t))
daemons(0)
