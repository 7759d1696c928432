# Chaos, R host and R daemons (the R side of tests/chaos.rs in mirai-core): short tasks through
# 4 local daemons while another process signals a random daemon of this host every 200 ms, and
# the host launches replacements so that 4 keep running.
# - kill: SIGKILL, no retry. Every task resolves, with its value or errorValue 19, none hangs.
# - kill, daemons(retry = 3): every task returns its value.
# - stop: SIGSTOP. The R API has no setting for the heartbeat and peer timeout (120 s), so a
#   frozen daemon would hold its task for two minutes: each one is held 1 s, then alternately
#   resumed (SIGCONT: its task must come back with its value) or killed (its task resolves 19).
# After each run, the host's R heap and resident memory are back near their levels before it,
# and no daemon process is left.
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

# The first line of a file under /proc, or NULL once the process is gone; `binary` reads a
# command line (its arguments separated by NUL bytes) as one string.
read_proc <- function(path, binary = FALSE) {
  tryCatch(suppressWarnings(if (binary) {
    bytes <- readBin(path, "raw", 65536L)
    rawToChar(bytes[bytes != as.raw(0L)])
  } else {
    readLines(path, n = 1L, warn = FALSE)
  }), error = function(e) NULL)
}

# The daemons of host `host_pid` (its children whose command line has the host's `url`): a list
# of their `pid`s and `state`s (the letter of /proc/PID/stat: R, S, T for stopped...).
host_daemons <- function(host_pid, url) {
  pid <- integer()
  state <- character()
  for (p in list.files("/proc", pattern = "^[0-9]+$")) {
    line <- read_proc(sprintf("/proc/%s/stat", p))
    if (!length(line)) next
    # After the command name in parentheses (which may hold spaces): state, ppid, ...
    fields <- strsplit(sub("^.*\\) ", "", line), " ", fixed = TRUE)[[1L]]
    if (length(fields) < 2L || fields[2L] != host_pid) next
    cmd <- read_proc(sprintf("/proc/%s/cmdline", p), binary = TRUE)
    if (!length(cmd) || !grepl(url, cmd, fixed = TRUE)) next
    pid <- c(pid, as.integer(p))
    state <- c(state, fields[1L])
  }
  list(pid = pid, state = state)
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
  # Daemons killed: never picked again (one may still look alive for a moment as it dies).
  killed <- integer()
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
          killed <- c(killed, pid)
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
    live <- setdiff(d$pid[running_state(d$state)], killed)
    if (!length(live)) next
    left <- left - 1L
    pid <- live[sample.int(length(live), 1L)]
    if (mode == "kill") {
      tools::pskill(pid, tools::SIGKILL)
      killed <- c(killed, pid)
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

# Tasks in flight at once: enough to keep 4 daemons busy between two polls many times over, few
# enough that the R objects alive (about 1.8 kB a mirai) stay small beside the R heap. With all
# 4,000 mirai alive at once, R's collector raises its thresholds at moments that vary from run to
# run, and the resident memory with them, by up to 19 MB: that would hide what is measured here.
window <- 400L

# Growth allowed over a run (after a warm-up run, which pays the one-time costs) of the R heap in
# use, and of the host's resident memory: 1 MB of R heap is 260 bytes a task (a leak of the run's
# mirai would be 7 MB); 5 MB of resident memory, 1.3 kB a task, is five times the largest
# movement seen between runs.
heap_margin <- 1
rss_margin <- 5

# Outcome codes of a task: its value, errorValue 19 or 18, anything else.
RIGHT <- 1L
E19 <- 19L
E18 <- 18L
OTHER <- -1L

outcome <- function(v, i) {
  if (identical(v, i + 1L)) return(RIGHT)
  if (is_error_value(v) && !is_mirai_error(v) && identical(unclass(v), 19L)) return(E19)
  if (is_error_value(v) && !is_mirai_error(v) && identical(unclass(v), 18L)) return(E18)
  cat(sprintf("task %d: unexpected outcome: ", i))
  print(v)
  OTHER
}

# One run: `n` tasks of `ms` milliseconds each through 4 daemons set with `retry`, with `faults`
# faults of `mode` ("kill" or "stop"), one every 200 ms: 40 make 8 s of chaos, so that a slow
# machine makes a run longer, not wilder. A task still unresolved `grace_s` seconds after the
# faults ended (when 4 daemons do what is left in ~5 s) hangs. Returns the counts.
chaos_run <- function(name, mode, retry, n = 4000L, ms = 5, faults = 40L, grace_s = 20, memory_checks = TRUE) {
  rss_before <- settled_rss()
  heap_before <- r_heap_mb()
  t0 <- Sys.time()
  daemons(4, retry = retry)
  url <- nextget("url")
  dir <- tempfile("chaos")
  dir.create(dir)
  system2(rscript, c(shQuote(self_path), "--signaller", Sys.getpid(), shQuote(url), mode, faults, shQuote(dir)),
          wait = FALSE)
  check(sprintf("%s: the signaller started", name), wait_until(function() file.exists(file.path(dir, "signaller.pid")), 30))

  # Submitting and collecting: `window` tasks in flight, each checked as it resolves; daemons
  # topped up to 4 as the signaller takes them.
  results <- integer(n)
  flight <- list() # the mirai in flight, named by their task numbers
  submitted <- 0L
  launched <- 0L
  rss_peak <- rss_before
  last_gc <- Sys.time()
  # Until `grace_s` after the faults end; at most a minute in all, even if the signaller stalls.
  deadline <- t0 + 60
  ended <- FALSE
  repeat {
    while (submitted < n && length(flight) < window) {
      submitted <- submitted + 1L
      flight[[as.character(submitted)]] <- mirai({ Sys.sleep(s); x + 1L }, x = submitted, s = ms / 1000)
    }
    done <- !vapply(flight, unresolved, logical(1L))
    for (key in names(flight)[done]) results[as.integer(key)] <- outcome(flight[[key]]$data, as.integer(key))
    flight <- flight[!done]
    if (submitted == n && !length(flight)) break
    if (Sys.time() > deadline) break
    if (!ended && file.exists(file.path(dir, "done"))) {
      ended <- TRUE
      deadline <- min(deadline, Sys.time() + grace_s)
    }
    launched <- launched + top_up()
    rss_peak <- max(rss_peak, rss_mb())
    # A full collection each second: the garbage this loop makes (reading /proc) would otherwise
    # build up in R's old generation, and R would raise its thresholds (and its memory) for it.
    if (Sys.time() > last_gc + 1) {
      invisible(gc())
      last_gc <- Sys.time()
    }
    Sys.sleep(0.05)
  }
  seconds <- as.numeric(difftime(Sys.time(), t0, units = "secs"))
  check(sprintf("%s: every task resolved, none hung (%d left after %.1f s)", name, n - sum(results != 0L), seconds),
        all(results != 0L))

  file.create(file.path(dir, "stop"))
  pid_file <- file.path(dir, "signaller.pid")
  signaller_pid <- if (file.exists(pid_file)) as.integer(readLines(pid_file)) else NA_integer_
  if (!is.na(signaller_pid)) {
    check(sprintf("%s: the signaller ended", name), wait_until(function() !alive(signaller_pid), 10))
    if (alive(signaller_pid)) tools::pskill(signaller_pid, tools::SIGKILL)
  }
  log <- if (file.exists(file.path(dir, "log"))) readLines(file.path(dir, "log")) else character()
  what <- sub(" .*$", "", log)
  if (any(what == "gone")) cat(log, sep = "\n")
  # Daemons still stopped (a signal the signaller sent as it ended): killed, never left behind.
  d <- my_daemons()
  for (pid in d$pid[stopped_state(d$state)]) tools::pskill(pid, tools::SIGKILL)
  # The daemons launched last connect first: one that found its host closed would print an error.
  wait_until(function() status()$connections >= sum(running_state(my_daemons()$state)), 10)
  daemons(0)
  check(sprintf("%s: no daemon process left", name), wait_until(function() !length(host_daemons(Sys.getpid(), url)$pid), 15))
  for (pid in host_daemons(Sys.getpid(), url)$pid) tools::pskill(pid, tools::SIGKILL)
  unlink(dir, recursive = TRUE)
  rm(flight, log, d)

  rss_after <- settled_rss()
  heap_after <- r_heap_mb()
  out <- list(tasks = n, kills = sum(what == "kill"), stops = sum(what == "stop"), conts = sum(what == "cont"),
              killed_stopped = sum(what == "kill-stopped"), launched = launched, values = sum(results == RIGHT),
              e19 = sum(results == E19), e18 = sum(results == E18), other = sum(results == OTHER), seconds = seconds,
              rss = c(rss_before, rss_after), heap = c(heap_before, heap_after))
  fault_text <- if (mode == "kill") sprintf("%d kills", out$kills)
                else sprintf("%d stops (%d resumed, %d killed)", out$stops, out$conts, out$killed_stopped)
  cat(sprintf("chaos %s: %d tasks, 4 daemons, %s, %d relaunched: %d values, %d x 19, %d x 18, %d other, %.1f s, host RSS %.1f -> %.1f MB (peak %.1f), R heap %.2f -> %.2f MB\n",
              name, n, fault_text, launched, out$values, out$e19, out$e18, out$other, seconds, rss_before, rss_after,
              rss_peak, heap_before, heap_after))
  if (memory_checks) {
    check(sprintf("%s: host RSS back near its level before (%.1f -> %.1f MB, margin %g MB)", name, rss_before, rss_after, rss_margin),
          rss_after - rss_before < rss_margin)
    check(sprintf("%s: R heap back to its level before (%.2f -> %.2f MB, margin %g MB)", name, heap_before, heap_after, heap_margin),
          heap_after - heap_before < heap_margin)
  }
  out
}

# A short run first pays what the first daemons, tasks, kills, launches and the byte-compiling of
# this file's functions cost once; its memory is not checked.
invisible(chaos_run("warm-up", "kill", retry = 0L, ms = 1, faults = 10L, memory_checks = FALSE))

r <- chaos_run("kill", "kill", retry = 0L)
check("kill: faults were injected (at least 10 kills)", r$kills >= 10L)
check("kill: some tasks were lost with their daemons (at least one 19)", r$e19 >= 1L)
check("kill: every task has its value or 19, nothing else", r$values + r$e19 == r$tasks)
# A daemon has one task at a time: a kill loses at most that one.
check(sprintf("kill: no more 19s than kills (%d, %d)", r$e19, r$kills), r$e19 <= r$kills)

r <- chaos_run("kill, retry = 3", "kill", retry = 3L)
check("kill, retry = 3: faults were injected (at least 10 kills)", r$kills >= 10L)
check(sprintf("kill, retry = 3: no task quarantined (%d x 18)", r$e18), r$e18 == 0L)
check(sprintf("kill, retry = 3: every task returned its value (%d x 19, %d other)", r$e19, r$other), r$values == r$tasks)

r <- chaos_run("stop", "stop", retry = 0L)
check("stop: faults were injected (at least 10 stops)", r$stops >= 10L)
check("stop: some stopped daemons were resumed and some killed", r$conts >= 1L && r$killed_stopped >= 1L)
check("stop: every task has its value or 19, nothing else", r$values + r$e19 == r$tasks)
# Only the stopped daemons that were killed lose a task; those resumed return theirs.
check(sprintf("stop: no more 19s than stopped daemons killed (%d, %d)", r$e19, r$killed_stopped), r$e19 <= r$killed_stopped)

check("no profile was left behind", is.null(nextget("url")))
finish("chaos")
