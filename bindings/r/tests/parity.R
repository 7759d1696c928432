# The R API as R's mirai's users and packages rely on it: one or more checks per point of the
# parity audit (shared/spec/r-parity-audit.md, sections 0, 1, 2 and 4).
# Run: Rscript bindings/r/tests/parity.R
library(mirai)

tests_dir <- dirname(normalizePath(sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE)[1L])))
source(file.path(tests_dir, "harness.R"))
error_of <- function(expr) tryCatch({ expr; NULL }, error = function(e) e)
check_error <- function(what, expr, pattern) {
  e <- error_of(expr)
  check(what, !is.null(e) && grepl(pattern, conditionMessage(e), fixed = TRUE))
}
rscript <- file.path(R.home("bin"), "Rscript")
wait_for <- function(n, .compute = NULL, secs = 30) {
  t0 <- Sys.time()
  while (status(.compute)$connections < n && difftime(Sys.time(), t0, units = "secs") < secs) Sys.sleep(0.05)
  status(.compute)$connections >= n
}

# §1.1 Formals as R's mirai has them (ours may add arguments at the end only).
upstream <- list(
  daemons = c("n", "url", "remote", "dispatcher", "...", "sync", "seed", "memory", "serial", "tls", "pass", ".compute"),
  mirai = c(".expr", "...", ".args", ".timeout", ".compute"),
  mirai_map = c(".x", ".f", "...", ".args", ".promise", ".compute"),
  everywhere = c(".expr", "...", ".args", ".min", ".compute"),
  nextget = c("x", ".compute"), collect_mirai = c("x", "options"), make_cluster = c("n", "url", "remote", "..."),
  daemon = c("url", "dispatcher", "...", "asyncdial", "autoexit", "cleanup", "output", "idletime", "walltime",
             "maxtasks", "tlscert", "rs"))
for (f in names(upstream)) {
  got <- names(formals(getExportedValue("mirai", f)))
  check(sprintf("formals of %s", f), identical(got[seq_along(upstream[[f]])], upstream[[f]]))
}
check("nextget defaults to the default profile", identical(formals(nextget)$.compute, "default"))

# §0.1 The collection options are exported objects.
ns_exports <- getNamespaceExports("mirai")
check(".flat, .progress and .stop exported", all(c(".flat", ".progress", ".stop") %in% ns_exports))
check("c(mirai::.stop, mirai::.progress) works", length(c(mirai::.stop, mirai::.progress)) == 2L)

daemons(2)
mp <- mirai_map(1:3, function(x) x * 2)
check("mp[mirai::.flat] flattens", identical(mp[mirai::.flat], c(2, 4, 6)))
check("mp[mirai::.stop, mirai::.progress]", identical(mirai_map(1:2, identity)[mirai::.stop, mirai::.progress], list(1L, 2L)))
check("mp[c(.stop, .flat)]", identical(mirai_map(1:2, identity)[c(.stop, .flat)], 1:2))
check("collect_mirai with purrr's character options", identical(collect_mirai(mirai_map(1:2, identity), c(".stop", ".progress")), list(1L, 2L)))
check_error("an unknown option is an error", mirai_map(1, identity)[.nonsense], "'.nonsense' not found")
check_error("an unknown option name is an error", collect_mirai(mirai_map(1, identity), ".nonsense"), "unknown collection option")
check("mirai_map returns invisibly", !withVisible(mirai_map(1, identity))$visible)

# A package importing the options from its NAMESPACE installs and works.
pkg <- file.path(tempfile("pkg"), "usesflat")
dir.create(file.path(pkg, "R"), recursive = TRUE)
writeLines(c("Package: usesflat", "Version: 0.1", "Title: t", "Description: t.", "License: MIT",
             "Author: a", "Maintainer: a <a@example.invalid>", "Imports: mirai"), file.path(pkg, "DESCRIPTION"))
writeLines(c("importFrom(mirai, .flat, .stop, mirai_map)", "export(doubled)"), file.path(pkg, "NAMESPACE"))
writeLines("doubled <- function(x) mirai_map(x, function(v) v * 2)[.stop, .flat]", file.path(pkg, "R", "f.R"))
lib <- tempfile("lib")
dir.create(lib)
install_log <- system2(file.path(R.home("bin"), "R"), c("CMD", "INSTALL", "-l", lib, pkg), stdout = TRUE, stderr = TRUE)
check("a package with importFrom(mirai, .flat) installs", is.null(attr(install_log, "status")))
check("and its function works", identical(tryCatch({
  library(usesflat, lib.loc = lib)
  doubled(1:3)
}, error = function(e) conditionMessage(e)), c(2, 4, 6)))

# §0.2 .stop and .flat errors as purrr's in_parallel() reads them.
e <- error_of(mirai_map(list(a = 1, b = "x", c = 3), function(x) x + 1)[.stop])
check(".stop error is an rlang error", inherits(e, "rlang_error"))
check(".stop error location", identical(e$location, 2L))
check(".stop error name", identical(e$name, "b"))
check(".stop error parent is the worker's error", inherits(e$parent, "error") && grepl("non-numeric argument", conditionMessage(e$parent)))
check(".stop error call", identical(conditionCall(e), quote(mirai_map())))
e <- error_of(mirai_map(list(1, 2), function(x) if (x == 2) stop("boom") else x)[.flat])
check(".flat on an error stops with the index", identical(e$location, 2L) && is.null(e$name) && grepl("boom", conditionMessage(e$parent)))
slow <- mirai_map(list(1, "a", 3, 4), function(x) { if (is.character(x)) return(x); Sys.sleep(if (x > 2) 10 else 0); x })
t0 <- Sys.time()
e <- error_of(slow[.flat])
check(".flat stops at the first type mismatch", grepl("Cannot flatten outputs of differing type: double / character", conditionMessage(e)) &&
        identical(e$location, 2L) && difftime(Sys.time(), t0, units = "secs") < 5)
check("and cancels the rest", identical(unclass(slow[[3L]][]), 20L))
e <- error_of(mirai_map(1:2, function(x) x, .timeout = 1)[.stop])
check("an errorValue under .stop says its code", is.null(e) || grepl("|", conditionMessage(e$parent), fixed = TRUE))

# Without cli (hidden by an empty site library): the same fields, R mirai's text, a text ticker.
plain <- system2(rscript, c("-e", shQuote(paste(
  "library(mirai); daemons(1); stopifnot(!requireNamespace('cli', quietly = TRUE));",
  "e <- tryCatch(mirai_map(list(a = 1, b = 'x'), function(x) x + 1)[.stop], error = identity);",
  "cat(e$location, e$name, inherits(e$parent, 'error'), sep = '|'); cat('\\n'); cat(conditionMessage(e), '\\n');",
  "invisible(mirai_map(1:2, identity)[.progress]); daemons(0)"))),
  stdout = TRUE, stderr = TRUE, env = c("R_LIBS_SITE=/nonexistent", paste0("R_LIBS=", Sys.getenv("R_LIBS"))))
check("without cli: .stop error fields", "2|b|TRUE" %in% plain)
check("without cli: 'In index i:' and the cause", any(plain == "In index 2:") && any(grepl("non-numeric argument", plain)))
check("without cli: a text progress ticker", any(grepl("[ 2 / 2 done ]", plain, fixed = TRUE)))

# §1.3 Data frames: cells by `[[`, names from character row names only; arrays by row.
df <- data.frame(n = 1:3, row.names = c("r1", "r2", "r3"))
df$l <- list(1:2, "a", list(b = 1))
df$f <- factor(c("u", "v", "u"))
rows <- collect_mirai(mirai_map(df, function(n, l, f) list(n = n, l = l, f = f)))
expected <- lapply(seq_len(nrow(df)), function(i) lapply(df, `[[`, i))
names(expected) <- rownames(df)
check("data-frame map: cells as lapply over rows by [[ gives them", identical(rows, expected))
check("data-frame map: integer row names give no names", is.null(names(mirai_map(data.frame(x = 1:2), function(x) x)[])))
check("data-frame map: reordered integer rows stay unnamed", is.null(names(mirai_map(data.frame(x = 1:3)[c(3, 1), , drop = FALSE], function(x) x)[])))
arr <- array(1:8, c(2, 2, 2))
check("mirai_map(.args =) as an environment", identical(mirai_map(1:2, function(x, y) x + y, .args = list2env(list(y = 1)))[], list(2, 3)))
check("nextcode of a negative code", identical(nextcode(-1), "-1 | Unknown exit code"))
check("3-d array: one task per row", length(mirai_map(arr, function(...) sum(...))[]) == 2L)
m <- matrix(1:4, 2, dimnames = list(c("a", "b"), c("x", "y")))
check("matrix rows as arguments, named by row", identical(mirai_map(m, function(x, y) x + y)[], list(a = 4L, b = 6L)))

# §0.5 / §1.4 Values that are not mirai pass through.
check("collect_mirai(list(1, 2))", identical(collect_mirai(list(1, 2)), list(1, 2)))
check("collect_mirai(\"a\")", identical(collect_mirai("a"), "a"))
check("collect_mirai(list(NULL))", identical(collect_mirai(list(NULL)), list(NULL)))
check("collect_mirai of a mixed list", identical(collect_mirai(list(mirai(1), 2)), list(1, 2)))
check("call_mirai(list(1)) returns x", identical(call_mirai(list(1)), list(1)))
check("stop_mirai(\"a\") is FALSE", identical(stop_mirai("a"), FALSE))
check("stop_mirai(list(1)) is FALSE", identical(stop_mirai(list(1)), FALSE))
check("unresolved of a value", identical(unresolved(list(1, "a")), FALSE))
check("race_mirai of a value", identical(race_mirai(list(mirai(Sys.sleep(5)), 2)), 2L))
daemons(1, .compute = "other")
check("race_mirai wakes for another profile's mirai", identical(race_mirai(list(mirai(Sys.sleep(5)), mirai(Sys.sleep(0.3), .compute = "other"))), 2L))
daemons(0, .compute = "other")
check_error("collect_value of a non-mirai is an R error", mirai:::collect_value(1), "not a mirai")
check_error("launch_local(\"x\") is refused", launch_local("x"), "whole number")

# §1.6 daemons(): error texts, streams, shapes without a dispatcher.
check_error("daemons() needs n", daemons(), "argument \"n\" is missing")
check_error("n < 0", daemons(-1), "the number of daemons must be zero or greater")
check_error("url type", daemons(url = identity, .compute = "x"), "`url` must be of type character, not closure")
check_error("race_mirai without daemons", race_mirai(list(), .compute = "none"), "daemons must be set to use this function")
check_error("launch without daemons", launch_local(1, .compute = "none"), "daemons must be set to use this function")
daemons(0)
set.seed(42)
daemons(1, .compute = "s1")
daemons(1, .compute = "s2")
check("successive daemons() calls get different streams", !identical(nextget("stream", .compute = "s1"), nextget("stream", .compute = "s2")))
check("daemons() leaves a .Random.seed, advanced", exists(".Random.seed", envir = .GlobalEnv))
set.seed(42)
daemons(1, .compute = "s3")
check("after set.seed() the same stream again", identical(nextget("stream", .compute = "s1"), nextget("stream", .compute = "s3")))
daemons(0, .compute = "s1")
daemons(0, .compute = "s2")
daemons(0, .compute = "s3")

daemons(2, dispatcher = FALSE, .compute = "direct")
check("status() without a dispatcher", identical(names(status("direct")), c("connections", "daemons")))
check("info() without a dispatcher", identical(unname(is.na(info("direct"))), c(FALSE, TRUE, TRUE, TRUE, TRUE)))
check("nextget dispatcher is NULL without one", is.null(nextget("dispatcher", .compute = "direct")))
daemons(0, .compute = "direct")
daemons(3)
check("nextget n is the number asked for", identical(nextget("n"), 3L))
check("nextget cv is NULL (no nanonext)", is.null(nextget("cv")))
daemons(1, .compute = "gpu")
check("nextget reads the default profile inside with_daemons", identical(with_daemons("gpu", nextget("url")), nextget("url")))
check("nextget sync / compute", identical(nextget("sync"), FALSE) && identical(nextget("compute", .compute = "gpu"), "gpu"))
daemons(0, .compute = "gpu")

# require_daemons(call =): attributed to the caller's call.
user_fn <- function() require_daemons(.compute = "nothing", call = environment())
e <- error_of(user_fn())
check("require_daemons attributed to call", identical(conditionCall(e), quote(user_fn())))
check("require_daemons text", grepl("No daemons set", conditionMessage(e)) && grepl("mirai::daemons(6)", conditionMessage(e), fixed = TRUE))

# §1.8 everywhere(): .args local, `<<-` global (more in tests.R).
invisible(everywhere({ kept <<- 1; dropped <- 2 }, .args = list(arg = 3))[])
check("everywhere: <<- stays, plain and .args do not", identical(mirai(c(exists("kept"), exists("dropped"), exists("arg")))[], c(TRUE, FALSE, FALSE)))

# §0.6 / §1.9 Launchers: fire and forget; shapes; commands honoured.
t0 <- Sys.time()
cmds <- launch_remote(1, remote_config(command = "sh", args = c("-c", "sleep 5", ".")))
check("launch_remote does not wait for daemons", difftime(Sys.time(), t0, units = "secs") < 3)
check("launch_remote returns the commands to run by hand visibly", withVisible(launch_remote(1, remote_config()))$visible)
check("and invisibly once it has run them (they carry the secret)", !withVisible(launch_remote(1, remote_config(command = "true", args = ".")))$visible)
s <- ssh_config(c("ssh://user@node1:2222", "node2"), timeout = 5)
check("ssh_config fields", identical(names(s)[1:5], c("command", "args", "rscript", "quote", "tunnel")))
check("ssh_config args", identical(s$args[[1L]], c("-o ConnectTimeout=5 -fTp 2222", "user@node1", ".")) &&
        identical(s$args[[2L]], c("-o ConnectTimeout=5 -fTp 22", "node2", ".")))
cc <- cluster_config(command = "sbatch", options = "#SBATCH --mem=1G\nmodule load R")
check("cluster_config fields", identical(names(cc)[1:4], c("command", "args", "rscript", "quote")) && identical(cc$command, "/bin/sh"))
check("cluster_config script", identical(cc$args, c("sbatch<<'EOF'\n#!/bin/sh\n#SBATCH --mem=1G\nmodule load R\n", ".", "\nEOF")))
daemons(url = "tcp://127.0.0.1:0", .compute = "sh")
launch_remote(1, cluster_config(command = "sh", options = "export FROM_SCRIPT=yes", rscript = rscript), .compute = "sh")
check("cluster_config with any submit command runs its job script", wait_for(1, "sh"))
check("the job script's lines ran", identical(mirai(Sys.getenv("FROM_SCRIPT"), .compute = "sh")[], "yes"))
daemons(0, .compute = "sh")
daemons(url = "tcp://127.0.0.1:0", remote = remote_config(command = "sh", args = c("-c", "."), rscript = rscript), .compute = "nless")
check("daemons(url =, remote =) without n launches one", wait_for(1, "nless"))
daemons(0, .compute = "nless")

daemons(url = "tcp://127.0.0.1:0", .compute = "args")
once <- launch_remote(1, remote_config(), maxtasks = 5, .compute = "args")
check("daemon arguments given to a launch apply to it", grepl("maxtasks=5", once))
check("and to it only", !grepl("maxtasks", launch_remote(1, remote_config(), .compute = "args")))
check_error("ssh_config(command =) other than ssh refuses a tunnel",
            launch_remote(1, ssh_config("ssh://h", tunnel = TRUE, command = "/usr/bin/ssh"), .compute = "args"), "needs command = \"ssh\"")
daemons(0, .compute = "args")
daemons(url = "tcp://0.0.0.0:0", .compute = "wide")
check_error("SSH tunnelling needs a loopback URL", launch_remote(1, ssh_config("ssh://h", tunnel = TRUE), .compute = "wide"),
            "SSH tunnelling requires daemons `url` hostname to be `127.0.0.1`")
daemons(0, .compute = "wide")
check("mirai()'s argument errors name the call", identical(conditionCall(error_of(mirai(1, 2))), quote(mirai(1, 2))))

# §0.7 / §1.10 make_cluster: unique IDs, url without n, n >= 1.
cl1 <- make_cluster(1)
cl2 <- make_cluster(1)
stop_cluster(cl1)
cl3 <- make_cluster(1)
check("cluster IDs are never reused", length(unique(c(attr(cl1, "id"), attr(cl2, "id"), attr(cl3, "id")))) == 3L)
check("a live cluster survives another's creation", identical(parallel::parLapply(cl2, 1:2, function(x) x), list(1L, 2L)))
check("[ on a cluster gives a plain list of nodes", identical(class(cl2[1L]), "list"))
stop_cluster(cl2)
stop_cluster(cl3)
check_error("make_cluster(0)", make_cluster(0), "`n` must be 1 or greater")
out <- capture.output(clu <- make_cluster(url = "tcp://127.0.0.1:0"))
check("make_cluster(url =) prints the deployment commands", any(grepl("Shell commands for deployment on nodes", out)) && length(clu) == 1L)
stop_cluster(clu)

# §0.3 / §1.7 Authentication that lets others' daemons join.
daemons(url = "tcp://127.0.0.1:0", .compute = "hand")
url <- nextget("url", .compute = "hand")
cmd <- launch_remote(1, .compute = "hand")
refused <- suppressWarnings(system2("env", c("-u", "MIRAI_SECRET", rscript, "-e", shQuote(sprintf("mirai::daemon('%s')", url))), stdout = TRUE, stderr = TRUE))
check("a hand-run daemon without the secret is refused, saying why", !is.null(attr(refused, "status")) && any(grepl("MIRAI_SECRET", refused)))
# The host's side of it, in a child session (libmirai writes to the process's stderr).
host_log <- suppressWarnings(system2(rscript, c("-e", shQuote(paste(
  "library(mirai); daemons(url = 'tcp://127.0.0.1:0');",
  "system2('env', c('-u', 'MIRAI_SECRET', file.path(R.home('bin'), 'Rscript'), '-e', shQuote(sprintf('mirai::daemon(\"%s\")', nextget('url')))), stdout = FALSE, stderr = FALSE);",
  "Sys.sleep(0.5)"))), stdout = TRUE, stderr = TRUE))
check("the host says it refused a daemon", any(grepl("failed authentication", host_log)))
system(sub("Rscript", rscript, cmd[1L], fixed = TRUE), wait = FALSE)
check("the printed command connects", wait_for(1, "hand"))
check("a task cannot read the secret", identical(mirai(Sys.getenv("MIRAI_SECRET"), .compute = "hand")[], ""))
# The daemon started with the secret in its initial environment: not even /proc shows it.
check("nor from /proc/self/environ", identical(mirai({
  env <- readBin("/proc/self/environ", "raw", 1e6)
  grepl(s, rawToChar(env[env != as.raw(0)]), fixed = TRUE)
}, s = Sys.getenv("MIRAI_SECRET"), .compute = "hand")[], FALSE))
# A process started from this session (a launcher of its own) inherits what a daemon needs.
system2(rscript, c("-e", shQuote(sprintf("mirai::daemon('%s')", url))), wait = FALSE)
check("a child process running mirai::daemon(url) joins", wait_for(2, "hand"))
daemons(0, .compute = "hand")
daemons(url = "tcp://127.0.0.1:0", auth = FALSE, .compute = "open")
system2("env", c("-u", "MIRAI_SECRET", rscript, "-e", shQuote(sprintf("mirai::daemon('%s')", nextget("url", .compute = "open")))), wait = FALSE)
check("daemons(auth = FALSE) takes a daemon without the secret", wait_for(1, "open"))
daemons(0, .compute = "open")

# nextget("tls") is what daemon(tlscert =) takes.
daemons(url = "tls+tcp://127.0.0.1:0", .compute = "tls")
code <- sprintf("mirai::daemon('%s', tlscert = %s)", nextget("url", .compute = "tls"), deparse1(nextget("tls", .compute = "tls")))
system2(rscript, c("-e", shQuote(code)), wait = FALSE)
check("daemon(tlscert = nextget(\"tls\")) connects", wait_for(1, "tls"))
daemons(0, .compute = "tls")

# Warnings in tasks are shown as they happen, not kept for the daemon's exit.
out <- suppressWarnings(system2(rscript, c("-e", shQuote(paste(
  "library(mirai); daemons(1); x <- mirai({ warning('from the task'); 1 })[]; daemons(0); Sys.sleep(0.5)"))),
  stdout = TRUE, stderr = TRUE))
check("a task's warning does not surface on the host at the daemon's exit", !any(grepl("from the task", out)))
daemons(1, output = TRUE, .compute = "warn")
check("a task's warning under warn = 2 is its error", is_mirai_error(mirai({ options(warn = 2); warning("w2") }, .compute = "warn")[]))
daemons(0, .compute = "warn")

daemons(0)
finish("parity")
