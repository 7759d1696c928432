# A lost peer is an error, never a signal, in R sessions. (R's SIGPIPE handler raises an R
# error, a longjmp, which inside libmirai crashes the session.)
# - An R host whose daemon is SIGKILLed while an 800 MB task goes to it: the task resolves
#   with 19, status() stops counting the daemon, the session goes on and exits cleanly.
# - An R daemon whose host is SIGKILLed while an 800 MB result goes to it: the daemon returns
#   and its process exits normally (its exit status is not a signal).
# Run: Rscript bindings/r/tests/sigpipe.R
# Each side runs in a child Rscript (this file again, with `--host`, `--vanish URL FILE` or
# `--serve URL`), so that a crash shows as a child's exit status instead of ending this script.

self_path <- local({
  arg <- grep("^--file=", commandArgs(FALSE), value = TRUE)
  if (length(arg)) normalizePath(sub("^--file=", "", arg[1L])) else ""
})
if (!file.exists(self_path)) stop("run this file with Rscript (its children run it again by its path)")
args <- commandArgs(TRUE)
source(file.path(dirname(self_path), "harness.R"))
suppressPackageStartupMessages(library(mirai))
rscript <- file.path(R.home("bin"), "Rscript")
big <- 800e6

# ---- children -------------------------------------------------------------------------------

# The host whose daemon is killed 0.3 s into the task's transfer (which takes seconds).
if (identical(args, "--host")) {
  daemons(1)
  pid <- mirai(Sys.getpid())[]
  m <- mirai(length(x), x = raw(big))
  Sys.sleep(0.3)
  tools::pskill(pid, tools::SIGKILL)
  m[]
  check("the task resolves with 19", is_error_value(m$data) && identical(unclass(m$data), 19L))
  deadline <- Sys.time() + 10
  while (status()$connections > 0L && Sys.time() < deadline) Sys.sleep(0.05)
  check("status() no longer counts the dead daemon", identical(status()$connections, 0L))
  daemons(0)
  daemons(1)
  check("the session goes on with a new daemon", identical(mirai(1 + 1)[], 2))
  daemons(0)
  finish("sigpipe host")
  quit(status = 0L)
}

# The host that vanishes: asks for a large result and writes its pid to FILE once the task is
# queued. Exit status 3 means the result arrived in full: it was killed too late.
if (length(args) == 3L && args[1L] == "--vanish") {
  daemons(url = args[2L])
  m <- mirai(raw(n), n = big)
  writeLines(as.character(Sys.getpid()), paste0(args[3L], ".part"))
  file.rename(paste0(args[3L], ".part"), args[3L])
  m[]
  quit(status = 3L)
}

# The daemon serving the host that vanishes.
if (length(args) == 2L && args[1L] == "--serve") {
  code <- daemon(args[2L])
  cat(sprintf("daemon returned %s\n", format(code)))
  quit(status = 0L)
}

# ---- the checks -----------------------------------------------------------------------------

no_sigpipe <- function(lines) !any(grepl("SIGPIPE|segfault|caught", lines))

# Children inherit this session's secret (MIRAI_SECRET), so a daemon started by one child can
# serve a host started by another.
invisible(mirai:::session_secret())

out <- suppressWarnings(system2(rscript, c(shQuote(self_path), "--host"), stdout = TRUE, stderr = TRUE))
cat(out, sep = "\n")
check("R host: exits with status 0", is.null(attr(out, "status")))
check("R host: all its checks passed", any(grepl("^sigpipe host: [0-9]+ passed, 0 failed$", out)))
check("R host: no SIGPIPE, no crash", no_sigpipe(out))

# The host's resident memory in MB, NA once it is gone.
rss_mb <- function(pid) {
  lines <- tryCatch(readLines(sprintf("/proc/%d/status", pid)), error = function(e) character())
  kb <- sub("^VmRSS:\\s+([0-9]+) kB$", "\\1", grep("^VmRSS:", lines, value = TRUE))
  if (length(kb)) as.numeric(kb) / 1024 else NA_real_
}

wait_for <- function(file, seconds) {
  deadline <- Sys.time() + seconds
  while (!file.exists(file) && Sys.time() < deadline) Sys.sleep(0.01)
  file.exists(file)
}

if (file.exists("/proc/self/status")) {
  dir <- tempfile("sigpipe")
  dir.create(dir)
  url <- local_url()
  pid_file <- file.path(dir, "host.pid")
  log_file <- file.path(dir, "daemon.log")
  status_file <- file.path(dir, "daemon.status")
  system2(rscript, c(shQuote(self_path), "--vanish", shQuote(url), shQuote(pid_file)), wait = FALSE)
  check("R daemon: the host started", wait_for(pid_file, 30))
  host_pid <- as.integer(readLines(pid_file))
  base <- rss_mb(host_pid)
  # Through sh, which records the daemon's exit status (128 + n for signal n).
  system2("sh", c("-c", shQuote(sprintf("%s %s --serve %s > %s 2>&1; echo $? > %s", shQuote(rscript),
    shQuote(self_path), shQuote(url), shQuote(log_file), shQuote(status_file)))), wait = FALSE)
  # The host's memory grows as the result arrives: 200 MB in, 600 MB are still on their way.
  deadline <- Sys.time() + 60
  repeat {
    now <- rss_mb(host_pid)
    if (is.na(now) || now > base + 200 || Sys.time() > deadline) break
    Sys.sleep(0.01)
  }
  check("R daemon: the host was killed while the result was arriving",
        !is.na(now) && now > base + 200 && tools::pskill(host_pid, tools::SIGKILL))
  check("R daemon: its process ended", wait_for(status_file, 60))
  daemon_status <- readLines(status_file)
  log <- readLines(log_file)
  cat(log, sep = "\n")
  check(sprintf("R daemon: exit status 0 (got %s)", daemon_status), identical(daemon_status, "0"))
  check("R daemon: daemon() returned 0 (connection ended)", any(grepl("^daemon returned 0$", log)))
  check("R daemon: no SIGPIPE, no crash", no_sigpipe(log))
  unlink(dir, recursive = TRUE)
} else {
  cat("no /proc: the vanishing host case is skipped\n")
}

finish("sigpipe")
