# Authentication. Every host of this R session asks its daemons to prove (an HMAC challenge,
# the secret never sent) that they hold the session's secret, kept in MIRAI_SECRET. Holding it
# in this process's environment is what lets daemons started from here join without further
# set-up: libmirai's launchers hand it on, and any child process this session starts (a
# launcher running `mirai::daemon(url)`, a batch job) inherits it. A daemon takes it out of its
# own environment before it evaluates anything, so tasks cannot read it. Set MIRAI_SECRET
# yourself (64 hex digits) to share one secret with daemons started elsewhere, or use
# `daemons(auth = FALSE)` on a trusted network.

# The session's secret (hex), chosen once: MIRAI_SECRET if set, else a new random one, set
# there.
session_secret <- function() {
  if (!is.null(.state$secret)) return(.state$secret)
  secret <- Sys.getenv("MIRAI_SECRET")
  if (!nzchar(secret)) {
    secret <- .Call(rmirai_random_hex, 64L)
    Sys.setenv(MIRAI_SECRET = secret)
  } else if (!grepl("^([0-9a-fA-F]{2}){16,}$", secret)) {
    stop("MIRAI_SECRET must be at least 32 hex digits (an even number of them)")
  }
  .state$secret <- secret
}

# For a daemon: the secret it was given in MIRAI_SECRET (NULL if none), removed from the
# environment (and from the process's initial environment block, which /proc shows), so no
# task or child process of the daemon sees it.
take_secret <- function() {
  secret <- .Call(rmirai_take_secret)
  if (length(secret) && nzchar(secret)) secret
}
