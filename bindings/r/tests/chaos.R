# Chaos, R host and R daemons (the R side of tests/chaos.rs in mirai-core): short tasks through
# 4 local daemons while another process signals a random daemon of this host every 200 ms, and
# the host launches replacements so that 4 keep running.
# - kill: SIGKILL, no retry. Every task resolves, with its value or errorValue 19, none hangs.
# - kill, daemons(retry = 3): every task returns its value.
# - stop: SIGSTOP. The R API has no setting for the heartbeat and peer timeout (120 s), so a
#   frozen daemon would hold its task for two minutes: each one is held 1 s, then alternately
#   resumed (SIGCONT: its task must come back with its value) or killed (its task resolves 19).
# After each run, the host's resident memory is back near its level before it, and no daemon
# process is left.
# Run: Rscript bindings/r/tests/chaos.R
# The signalling process runs this file again: `--signaller HOST_PID URL MODE FAULTS DIR`.

self_path <- local({
  arg <- grep("^--file=", commandArgs(FALSE), value = TRUE)
  if (length(arg)) normalizePath(sub("^--file=", "", arg[1L])) else ""
})
if (!file.exists(self_path)) stop("run this file with Rscript (its signaller runs it again by its path)")
args <- commandArgs(TRUE)

interval <- 0.2 # seconds between two faults
hold <- 1 # seconds a stopped daemon stays stopped

# ---- processes ------------------------------------------------------------------------------

# The daemons of host `host_pid` (its children whose command line has the host's `url`): a data
# frame of pid, state (the letter of /proc/PID/stat: R, S, T for stopped...) and age in seconds.
host_daemons <- function(host_pid, url) {
  none <- data.frame(pid = integer(), state = character(), age = numeric())
  pids <- list.files("/proc", pattern = "^[0-9]+$")
  uptime <- as.numeric(strsplit(readLines("/proc/uptime"), " ", fixed = TRUE)[[1L]][1L])
  rows <- lapply(pids, function(p) {
    line <- tryCatch(suppressWarnings(readLines(sprintf("/proc/%s/stat", p), warn = FALSE)), error = function(e) character())
    if (!length(line)) return(NULL)
    # After the command name in parentheses (which may hold spaces): state, ppid, ... starttime.
    fields <- strsplit(sub("^.*\\) ", "", line[1L]), " ", fixed = TRUE)[[1L]]
    if (length(fields) < 20L || fields[2L] != host_pid) return(NULL)
    cmd <- tryCatch(suppressWarnings(readBin(sprintf("/proc/%s/cmdline", p), "raw", 65536L)), error = function(e) raw())
    cmd[cmd == as.raw(0L)] <- as.raw(32L)
    if (!grepl(url, rawToChar(cmd), fixed = TRUE)) return(NULL)
    data.frame(pid = as.integer(p), state = fields[1L], age = uptime - as.numeric(fields[20L]) / 100)
  })
  rows <- rows[!vapply(rows, is.null, logical(1L))]
  if (length(rows)) do.call(rbind, rows) else none
}

stopped_state <- function(state) state %in% c("T", "t")
running_state <- function(state) !state %in% c("T", "t", "Z", "X")

alive <- function(pid) isTRUE(tools::pskill(pid, 0L))

# ---- the signaller --------------------------------------------------------------------------

# Every `interval` seconds, picks a running daemon of the host at random and kills it (MODE
# kill) or stops it (MODE stop: after `hold` seconds it is resumed or killed, in turn), FAULTS
# times. Writes one line per signal to DIR/log, and DIR/done once the last stopped daemon is
# released; ends then, or earlier when DIR/stop appears or the host is gone (killing the daemons
# it holds stopped).
if (length(args) == 6L && args[1L] == "--signaller") {
  host_pid <- as.integer(args[2L])
  url <- args[3L]
  mode <- args[4L]
  left <- as.integer(args[5L])
  dir <- args[6L]
  log <- file.path(dir, "log")
  note <- function(what, pid) cat(sprintf("%s %d\n", what, pid), file = log, append = TRUE)
  held <- data.frame(pid = integer(), at = numeric())
  resumes <- TRUE # the next release resumes (then kills, then resumes...)
  ours <- function(pid) pid %in% host_daemons(host_pid, url)$pid
  writeLines(as.character(Sys.getpid()), file.path(dir, "signaller.pid"))
  repeat {
    Sys.sleep(interval)
    if (file.exists(file.path(dir, "stop")) || !alive(host_pid)) break
    now <- as.numeric(Sys.time())
    for (pid in held$pid[held$at + hold <= now]) {
      if (ours(pid)) {
        if (resumes) {
          tools::pskill(pid, tools::SIGCONT)
          note("cont", pid)
        } else {
          tools::pskill(pid, tools::SIGKILL)
          note("kill-stopped", pid)
        }
        resumes <- !resumes
      } else {
        note("gone", pid)
      }
      held <- held[held$pid != pid, ]
    }
    if (left == 0L) {
      if (!nrow(held)) break
      next
    }
    d <- host_daemons(host_pid, url)
    live <- d$pid[running_state(d$state)]
    if (!length(live)) next
    left <- left - 1L
    pid <- live[sample.int(length(live), 1L)]
    if (mode == "kill") {
      tools::pskill(pid, tools::SIGKILL)
      note("kill", pid)
    } else {
      tools::pskill(pid, tools::SIGSTOP)
      note("stop", pid)
      held <- rbind(held, data.frame(pid = pid, at = now))
    }
  }
  for (pid in held$pid) if (ours(pid)) {
    tools::pskill(pid, tools::SIGKILL)
    note("kill-stopped", pid)
  } else note("gone", pid)
  file.create(file.path(dir, "done"))
  quit(status = 0L)
}

# ---- the host -------------------------------------------------------------------------------

source(file.path(dirname(self_path), "harness.R"))
suppressPackageStartupMessages(library(mirai))
rscript <- file.path(R.home("bin"), "Rscript")
if (!file.exists("/proc/self/status")) {
  cat("no /proc: the chaos tests are skipped\n")
  finish("chaos")
  quit(status = 0L)
}

rss_mb <- function() {
  kb <- sub("^VmRSS:\\s+([0-9]+) kB$", "\\1", grep("^VmRSS:", readLines("/proc/self/status"), value = TRUE))
  as.numeric(kb) / 1024
}

settled_rss <- function() {
  invisible(gc())
  invisible(gc())
  rss_mb()
}

# The R heap in use, in MB (cons cells of 56 bytes, vector cells of 8), after a collection.
r_heap_mb <- function() {
  g <- gc()
  (g[1L, 1L] * 56 + g[2L, 1L] * 8) / 2^20
}

wait_until <- function(ok, seconds) {
  deadline <- Sys.time() + seconds
  while (!ok() && Sys.time() < deadline) Sys.sleep(0.05)
  ok()
}

# The daemons of this host, as its signaller sees them.
my_daemons <- function() host_daemons(Sys.getpid(), nextget("url"))

# Launches daemons until 4 run (not stopped, not being killed); returns how many it launched.
top_up <- function() {
  d <- my_daemons()
  missing <- 4L - sum(running_state(d$state))
  if (missing > 0L) launch_local(missing)
  max(missing, 0L)
}

# Growth allowed over a run (after a warm-up run, which pays the one-time costs) of the R heap in
# use, and of the host's resident memory. A run's 4,000 mirai take 7 MB of R heap: 1 MB is a
# seventh of one mirai per task. The resident memory moves by up to 1 MB from run to run (R keeps
# pages it freed); 5 MB is a leak of 1.3 kB per task, in R or in libmirai.
heap_margin <- 1
rss_margin <- 5

# One run: `n` tasks of `ms` milliseconds each through 4 daemons set with `retry`, with `faults`
# faults of `mode` ("kill" or "stop"), one every 200 ms: 40 make 8 s of chaos, so that a slow
# machine makes a run longer, not wilder. A task still unresolved `grace_s` seconds after the
# faults ended (when 4 daemons do the rest in ~5 s) hangs. Returns the counts.
chaos_run <- function(name, mode, retry, n = 4000L, ms = 5, faults = 40L, grace_s = 20) {
  rss_before <- settled_rss()
  heap_before <- r_heap_mb()
  t0 <- Sys.time()
  daemons(4, retry = retry)
  url <- nextget("url")
  dir <- tempfile("chaos")
  dir.create(dir)
  system2(rscript, c(shQuote(self_path), "--signaller", Sys.getpid(), shQuote(url), mode, faults, shQuote(dir)),
          wait = FALSE)
  signaller_started <- wait_until(function() file.exists(file.path(dir, "signaller.pid")), 30)
  check(sprintf("%s: the signaller started", name), signaller_started)
  launched <- 0L
  rss_peak <- rss_before
  ms_list <- vector("list", n)
  for (i in seq_len(n)) {
    ms_list[[i]] <- mirai({ Sys.sleep(s); x + 1L }, x = i, s = ms / 1000)
    if (i %% 500L == 0L) launched <- launched + top_up()
  }
  # Collecting: values in order of submission, topping daemons up as the signaller takes them.
  pending <- 1L
  deadline <- t0 + 30 + grace_s # the faults end in under 30 s, even on a slow machine
  while (pending <= n && Sys.time() < deadline) {
    if (deadline > Sys.time() + grace_s && file.exists(file.path(dir, "done"))) deadline <- Sys.time() + grace_s
    while (pending <= n && !unresolved(ms_list[[pending]])) pending <- pending + 1L
    launched <- launched + top_up()
    rss_peak <- max(rss_peak, rss_mb())
    Sys.sleep(0.05)
  }
  seconds <- as.numeric(difftime(Sys.time(), t0, units = "secs"))
  check(sprintf("%s: every task resolved, none hung (%d left after %.1f s)", name, n - pending + 1L, seconds),
        pending > n)

  file.create(file.path(dir, "stop"))
  signaller_pid <- as.integer(readLines(file.path(dir, "signaller.pid")))
  check(sprintf("%s: the signaller ended", name), wait_until(function() !alive(signaller_pid), 10))
  if (alive(signaller_pid)) tools::pskill(signaller_pid, tools::SIGKILL)
  log <- if (file.exists(file.path(dir, "log"))) readLines(file.path(dir, "log")) else character()
  what <- sub(" .*$", "", log)
  # Daemons still stopped (a signal the signaller sent as it ended): killed, never left behind.
  d <- my_daemons()
  for (pid in d$pid[stopped_state(d$state)]) tools::pskill(pid, tools::SIGKILL)

  # Values read before daemons(0), which would resolve what is left with 19.
  values <- lapply(ms_list, function(m) m$data)
  # The daemons launched last connect first: one closing as it starts would print an error.
  wait_until(function() status()$connections >= nrow(my_daemons()), 10)
  daemons(0)
  check(sprintf("%s: no daemon process left", name), wait_until(function() nrow(host_daemons(Sys.getpid(), url)) == 0L, 15))
  for (pid in host_daemons(Sys.getpid(), url)$pid) tools::pskill(pid, tools::SIGKILL)
  if (any(what == "gone")) cat(log, sep = "\n")
  unlink(dir, recursive = TRUE)

  right <- vapply(seq_len(n), function(i) identical(values[[i]], i + 1L), logical(1L))
  code <- vapply(values, function(v) if (is_error_value(v) && !is_mirai_error(v)) as.integer(unclass(v))[1L] else NA_integer_, 0L)
  other <- !right & !(code %in% c(18L, 19L))
  if (any(other)) {
    cat(sprintf("%s: unexpected outcomes, first ones:\n", name))
    for (i in head(which(other), 3L)) { cat(sprintf("task %d: ", i)); print(values[[i]]) }
  }
  out <- list(tasks = n, kills = sum(what == "kill"), stops = sum(what == "stop"), conts = sum(what == "cont"),
              killed_stopped = sum(what == "kill-stopped"), launched = launched, values = sum(right),
              e19 = sum(code == 19L, na.rm = TRUE), e18 = sum(code == 18L, na.rm = TRUE), other = sum(other),
              seconds = seconds)
  rm(ms_list, values, right, code, other, log, what, d)
  rss_after <- settled_rss()
  heap_after <- r_heap_mb()
  out$rss <- c(rss_before, rss_after)
  out$heap <- c(heap_before, heap_after)
  fault_text <- if (mode == "kill") sprintf("%d kills", out$kills)
                else sprintf("%d stops (%d resumed, %d killed)", out$stops, out$conts, out$killed_stopped)
  cat(sprintf("chaos %s: %d tasks, 4 daemons, %s, %d relaunched: %d values, %d x 19, %d x 18, %d other, %.1f s, host RSS %.1f -> %.1f MB (peak %.1f), R heap %.2f -> %.2f MB\n",
              name, n, fault_text, launched, out$values, out$e19, out$e18, out$other, seconds, rss_before, rss_after,
              rss_peak, heap_before, heap_after))
  check(sprintf("%s: host RSS back near its level before (%.1f -> %.1f MB, margin %g MB)", name, rss_before, rss_after, rss_margin),
        rss_after - rss_before < rss_margin)
  check(sprintf("%s: R heap back to its level before (%.2f -> %.2f MB, margin %g MB)", name, heap_before, heap_after, heap_margin),
        heap_after - heap_before < heap_margin)
  out
}

# The session's secret is made now, so that the first run's memory does not count it; a run
# without faults first pays what the first daemons, tasks, launches and the byte-compiling of
# this file's functions cost once.
invisible(mirai:::session_secret())
invisible(chaos_run("warm-up", "kill", retry = 0L, ms = 0, faults = 0L))

r <- chaos_run("kill", "kill", retry = 0L)
check("kill: faults were injected (at least 10 kills)", r$kills >= 10L)
check("kill: some tasks were lost with their daemons (at least one 19)", r$e19 >= 1L)
check("kill: every task has its value or 19, nothing else", r$values + r$e19 == r$tasks)

r <- chaos_run("kill, retry = 3", "kill", retry = 3L)
check("kill, retry = 3: faults were injected (at least 10 kills)", r$kills >= 10L)
check(sprintf("kill, retry = 3: no task quarantined (%d x 18)", r$e18), r$e18 == 0L)
check(sprintf("kill, retry = 3: every task returned its value (%d x 19, %d other)", r$e19, r$other), r$values == r$tasks)

r <- chaos_run("stop", "stop", retry = 0L)
check("stop: faults were injected (at least 10 stops)", r$stops >= 10L)
check("stop: some stopped daemons were resumed and some killed", r$conts >= 1L && r$killed_stopped >= 1L)
check("stop: every task has its value or 19, nothing else", r$values + r$e19 == r$tasks)

check("no profile was left behind", is.null(nextget("url")))
finish("chaos")
