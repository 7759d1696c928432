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

# A self-signed certificate for 127.0.0.1 made with openssl, in a fresh directory: `cert` (the
# certificate alone, for daemons' `tlscert`) and `both` (certificate then key, for `tls =`).
# NULL when openssl is missing.
self_signed_cert <- function() {
  if (!nzchar(Sys.which("openssl"))) return(NULL)
  dir <- tempfile("cert")
  dir.create(dir)
  cert <- file.path(dir, "cert.pem")
  key <- file.path(dir, "key.pem")
  system2("openssl", c("req", "-x509", "-newkey", "rsa:2048", "-sha256", "-days", "30", "-nodes",
                       "-subj", "/CN=127.0.0.1", "-addext", shQuote("subjectAltName=IP:127.0.0.1"),
                       "-addext", shQuote("basicConstraints=critical,CA:FALSE"), "-keyout", key, "-out", cert),
          stdout = FALSE, stderr = FALSE)
  both <- file.path(dir, "both.pem")
  writeLines(c(readLines(cert), readLines(key)), both)
  list(dir = dir, cert = cert, key = key, both = both)
}
