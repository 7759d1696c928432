# The R API over ws:// and wss:// (WebSocket): quick start, mirai_map, cancellation, a killed
# daemon giving 19, and TLS with the user's own certificate. Run: Rscript bindings/r/tests/websocket.R
library(mirai)
tests_dir <- dirname(normalizePath(sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE)[1L])))
source(file.path(tests_dir, "harness.R"))

wait_connections <- function(n) {
  t0 <- Sys.time()
  while (status()$connections < n && difftime(Sys.time(), t0, units = "secs") < 30) Sys.sleep(0.05)
  status()$connections >= n
}

for (url in c("ws://127.0.0.1:0/mirai", "wss://127.0.0.1:0")) {
  scheme <- sub(":.*", "", url)
  daemons(url = url)
  pattern <- if (scheme == "ws") "^ws://127\\.0\\.0\\.1:[1-9][0-9]*/mirai$" else "^wss://127\\.0\\.0\\.1:[1-9][0-9]*/$"
  check(paste(scheme, "nextget url has the real port and path"), grepl(pattern, nextget("url")))
  check(paste(scheme, "status reports the URL"), identical(status()$daemons, nextget("url")))
  launch_local(2)
  check(paste(scheme, "daemons connect"), wait_connections(2L))
  check(paste(scheme, "quick start"), identical(mirai(x + 1, x = 41)[], 42))
  check(paste(scheme, "mirai_map"), identical(mirai_map(1:20, function(i) i * 2)[.flat], as.numeric(1:20 * 2)))
  check(paste(scheme, "a large object"), identical(length(mirai(raw(8e6))[]), 8e6L))
  slow <- mirai(Sys.sleep(100))
  Sys.sleep(0.3)
  check(paste(scheme, "stop_mirai a running task"), isTRUE(stop_mirai(slow)))
  check(paste(scheme, "cancelled resolves 20"), identical(unclass(slow[]), 20L))
  all_pids <- unlist(everywhere(Sys.getpid())[])
  doomed <- mirai(Sys.sleep(100))
  Sys.sleep(0.3)
  idle_pid <- mirai(Sys.getpid())[]
  tools::pskill(setdiff(all_pids, idle_pid), tools::SIGKILL)
  check(paste(scheme, "killed daemon gives 19"), identical(unclass(doomed[]), 19L))
  daemons(0)
}

check("host_url(ws = TRUE)", all(grepl("^ws://.+:0/$", host_url(ws = TRUE))) &&
        all(grepl("^wss://.+:5555/$", host_url(ws = TRUE, tls = TRUE, port = 5555))))

# daemon() in this process over ws://, and a wrong path reported as such.
daemons(url = "ws://127.0.0.1:0/pool")
url <- nextget("url")
# A daemon takes the secret out of its environment: give it again before each.
secret <- .Call(mirai:::rmirai_secret, mirai:::get_profile("default")$host)
Sys.setenv(MIRAI_SECRET = secret)
check("daemon() over ws:// exits on its idletime", identical(daemon(url, idletime = 300), 1L))
Sys.setenv(MIRAI_SECRET = secret)
msg <- tryCatch({ daemon(sub("/pool$", "/other", url)); "" }, error = function(e) conditionMessage(e))
check("a wrong path is reported", grepl("404", msg, fixed = TRUE))
Sys.unsetenv("MIRAI_SECRET")
daemons(0)

# wss:// with the user's own certificate, and `tlscert` for daemons.
if (!is.null(own <- self_signed_cert())) {
  daemons(url = "wss://127.0.0.1:0/secure", tls = own$both, tlscert = own$cert)
  launch_local(1)
  check("wss user certificate serves", wait_connections(1L) && identical(mirai(2 * 21)[], 42))
  daemons(0)
  unlink(own$dir, recursive = TRUE)
}

finish("websocket.R")
