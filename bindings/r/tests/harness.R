# What the R test scripts share: a pass/fail counter, and the closing line the test runners
# read ("NAME: N passed, M failed"), with a failing exit status when anything failed.
# Each script sources it with: source(file.path(tests_dir, "harness.R")), tests_dir being the
# script's own folder.

passed <- 0L
failed <- 0L

check <- function(what, ok) {
  if (isTRUE(ok)) {
    passed <<- passed + 1L
  } else {
    failed <<- failed + 1L
    cat("FAILED:", what, "\n")
  }
}

finish <- function(name) {
  cat(sprintf("%s: %d passed, %d failed\n", name, passed, failed))
  if (failed > 0L) quit(status = 1L)
}
