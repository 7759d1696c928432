# A corpus of R objects round-tripped through the mirai package: every type R's serializer
# writes, at the lengths where the shape of its writes changes, with attributes, references and
# string encodings, and thousands of random nested objects. Each goes as `...` (the daemon's
# global environment), as `.args` (the task's local environment) and comes back as a value
# built on the daemon, through mirai(), mirai_map(), everywhere() and a make_cluster() cluster.
# Run: Rscript bindings/r/tests/corpus.R
library(mirai)

tests_dir <- dirname(normalizePath(sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE)[1L])))
source(file.path(tests_dir, "harness.R"))

# With CORPUS_TIMES=1, the time each part takes goes to stderr.
t_start <- Sys.time()
lap <- function(what) if (nzchar(Sys.getenv("CORPUS_TIMES"))) message(sprintf("%6.1f s  %s", difftime(Sys.time(), t_start, units = "secs"), what))

# A mirai's value; an error collecting it here (the host failing to read the result) is kept
# as a value too, so one bad object does not stop the run.
value_of <- function(m) tryCatch(m[], error = function(e) structure(conditionMessage(e), class = "hostError"))
values_of <- function(ms) lapply(unclass(ms), value_of)

# What went wrong, for a failure line: the error a mirai (or the host) gave, if any.
why <- function(got) {
  if (inherits(got, "hostError")) paste0(" [host: ", unclass(got), "]")
  else if (is_mirai_interrupt(got)) " [interrupted]"
  else if (is_mirai_error(got)) paste0(" [", as.character(got), "]")
  else if (is_error_value(got)) paste0(" [", nextcode(as.integer(got)), "]")
  else ""
}

# A round trip is right when identical() holds on the values and on R's own serialization of
# both: that also sees what identical() passes over (string encodings, the sign of zero, NaN
# payloads, ALTREP forms, attribute order). Cases holding environments compare by
# serialization alone: identical() on environments asks whether they are one and the same,
# which a copy from another process never is; their serializations hold their contents
# (bindings, enclosure, attributes, locking), and closures' and formulas' with them.
same <- function(got, want, by_contents = FALSE) {
  # (R warns that a package environment may not be attached where it is read: here it is.)
  (by_contents || identical(got, want)) && suppressWarnings(identical(serialize(got, NULL), serialize(want, NULL)))
}

# Case by case, for lists of cases: a named logical vector (all FALSE if the list came back
# wrong as a whole).
compare_cases <- function(got, want, contents = character()) {
  if (!is.list(got) || !identical(names(got), names(want))) return(vapply(want, function(w) FALSE, logical(1L)))
  vapply(names(want), function(k) same(got[[k]], want[[k]], k %in% contents), logical(1L))
}

# Runs `expr` with a fixed Mersenne-Twister seed and puts the caller's RNG back (daemons use
# L'Ecuyer-CMRG streams): the random corpus comes out the same on the host and on each daemon.
with_seed <- function(seed, expr) {
  old <- get0(".Random.seed", envir = globalenv(), inherits = FALSE)
  kind <- RNGkind()
  on.exit({
    RNGkind(kind[1L], kind[2L], kind[3L])
    if (is.null(old)) rm(".Random.seed", envir = globalenv()) else assign(".Random.seed", old, envir = globalenv())
  })
  set.seed(seed, kind = "Mersenne-Twister", normal.kind = "Inversion", sample.kind = "Rejection")
  expr
}

atomic_types <- c("logical", "integer", "double", "complex", "character", "raw")

# R's serializer writes vectors in pieces of 8096 elements; the package stages writes of up to
# 16 KiB in a 32 KiB buffer and hands larger ones on directly. So: lengths either side of a
# piece (8096), and of 4 to 64 KiB (the staging limits, their halves and doubles) for 1, 4, 8
# and 16-byte elements (raw; logical and integer; double; complex).
corpus_lengths <- c(0, 1, 1023:1025, 2047:2049, 4095:4097, 8095:8097, 8191:8193, 16383:16385, 32767:32769, 1e5)

# A vector of `type` and length `n` with no period a piece boundary could hide (so pieces out
# of order or repeated show), and NA, NaN, +-Inf and -0 at its start.
string_pool <- c(paste0("s", 0:996), "", "\u00e9t\u00e9 \u65e5\u672c", NA)
make_atomic <- function(type, n) {
  v <- (seq_len(n) * 40503) %% 65521
  x <- switch(type,
              logical = c(TRUE, FALSE, NA)[v %% 3 + 1],
              integer = as.integer(v) - 30000L,
              double = v / 7 - 4000,
              complex = complex(real = v / 3, imaginary = -v / 11),
              character = string_pool[v %% 1000 + 1],
              raw = as.raw(v %% 256))
  head <- switch(type,
                 logical = NA,
                 integer = c(NA, .Machine$integer.max, -.Machine$integer.max),
                 double = c(NA, NaN, Inf, -Inf, -0),
                 complex = c(NA, complex(real = NaN, imaginary = 1), complex(real = -0, imaginary = -Inf)),
                 character = c(NA, ""),
                 raw = as.raw(c(0, 255)))
  k <- min(n, length(head))
  if (k) x[seq_len(k)] <- head[seq_len(k)]
  x
}

# One string of exactly n bytes (one CHARSXP: a single write of n bytes).
long_string <- function(n) substring(paste(make_atomic("integer", n %/% 3 + 10), collapse = ""), 1L, n)

# A closure with source references, parsed with keep.source from a srcfile whose timestamp and
# directory are fixed, so that one built on a daemon serializes as one built here does.
with_source <- function(lines, compile = FALSE) {
  old <- options(keep.source = TRUE)
  on.exit(options(old))
  sf <- srcfilecopy("<corpus>", lines, timestamp = as.POSIXct("2024-01-01", tz = "UTC"), isFile = FALSE)
  assign("wd", "/", envir = sf)
  f <- eval(parse(text = lines, srcfile = sf, keep.source = TRUE)[[1L]], globalenv())
  if (compile) compiler::cmpfun(f) else f
}

# A real external pointer, a new object each time (getLoadedDLLs() hands out the same one,
# whose attributes would then be shared).
native_pointer <- function() getDLLRegisteredRoutines("stats")$.Call$cutree$address

# Helpers made here have this function's frame as environment: re-homed in the global
# environment, they do not drag the frame (the whole corpus) along.
global_fun <- function(f) {
  environment(f) <- globalenv()
  f
}

# The cases that hold environments (compared by contents; see same()).
by_contents <- c("env", "env_nested", "env_cycle", "env_locked", "env_active", "env_promise",
                 "env_classed", "env_twice", "closure_local", "closure_srcref", "closure_srcref_bytecode",
                 "formula_local", "extptr_plain")

# The typed corpus: deterministic, so a daemon builds the very same one to compare against.
build_corpus <- function() {
  if (!methods::isClass("CorpusPerson", where = globalenv())) {
    methods::setClass("CorpusPerson", methods::representation(name = "character", age = "numeric"), where = globalenv())
    methods::setClass("CorpusNum", contains = "numeric", methods::representation(unit = "character"), where = globalenv())
  }
  out <- list()
  for (type in atomic_types) for (n in corpus_lengths) out[[sprintf("%s_%d", type, n)]] <- make_atomic(type, n)
  for (n in c(16383, 16384, 16385, 32767, 32768, 32769, 1e6)) out[[sprintf("long_string_%d", n)]] <- long_string(n)

  named <- 1:3
  names(named) <- c("a", NA, "")
  df <- data.frame(a = 1:3, b = c("x", "y", NA), f = factor(c("u", "v", "u")), stringsAsFactors = FALSE,
                   row.names = c("r1", "r2", "r3"))
  df$l <- list(1:2, "a", list(x = NULL, y = quote(z)))
  df$m <- matrix(1:6, 3)
  fm <- y ~ x + log(z)
  environment(fm) <- globalenv()
  one_sided <- ~ a | b
  environment(one_sided) <- globalenv()
  latin1_marked <- "caf\xe9"
  Encoding(latin1_marked) <- "latin1"
  bytes <- rawToChar(as.raw(c(0xff, 0xfe, 0x80, 0x20, 0x62)))
  Encoding(bytes) <- "bytes"
  latin1 <- iconv("caf\u00e9 na\u00efve", "UTF-8", "latin1")
  utf8 <- enc2utf8("h\u00e9llo w\u00f6rld \u2603 \u65e5\u672c\u8a9e \U0001F600")
  values <- list(
    double_special = c(NA, NaN, Inf, -Inf, -0, 0, .Machine$double.xmax, .Machine$double.xmin, 5e-324, pi, -1e308),
    integer_special = c(NA, .Machine$integer.max, -.Machine$integer.max, 0L),
    complex_special = complex(real = c(NA, NaN, Inf, -0, 1), imaginary = c(1, NA, -Inf, -0, NaN)),
    logical_special = c(NA, TRUE, FALSE),
    character_special = c(NA, "", "NA", " ", "\t\n\\\"", strrep("x", 10)),
    raw_special = as.raw(c(0, 255, 127, 128)),
    minus_zero = -0,
    utf8_long = strrep("\u00e9", 8193),
    named = named,
    named_double = c(a = 1.5, b = -0, c = NA),
    matrix_dimnames = matrix(make_atomic("double", 6), 2, dimnames = list(c("r1", "r2"), c("a", "b", "c"))),
    array3 = array(make_atomic("integer", 24), c(2, 3, 4), dimnames = list(c("a", "b"), NULL, paste0("k", 1:4))),
    array3_big = array(make_atomic("complex", 2 * 3 * 4000), c(2, 3, 4000)),
    classed = structure(1:3, class = c("myclass", "other")),
    attributes = structure(list(1, "a"), names = c("p", "q"), myattr = list(deep = 1:3, f = "x"),
                           big_attr = make_atomic("raw", 20000), class = "withattrs"),
    attributes_on_double = structure(make_atomic("double", 9000), units = "cm", note = "\u00e9"),
    factor = factor(c("b", "a", NA, "c", "a"), levels = c("c", "b", "a")),
    ordered = factor(c("lo", "hi", "mid"), levels = c("lo", "mid", "hi"), ordered = TRUE),
    factor_na_level = addNA(factor(c("x", NA))),
    factor_big = factor(make_atomic("character", 16385)),
    date = as.Date("2024-02-29") + c(0:3, NA),
    date_fractional = structure(19000.5, class = "Date"),
    posixct_utc = as.POSIXct("2024-03-10 12:34:56.789", tz = "UTC"),
    posixct_new_york = as.POSIXct(c("2024-03-10 01:59:59", "2024-03-10 03:00:00", NA), tz = "America/New_York"),
    posixct_kolkata = as.POSIXct("1970-01-01 05:30:00", tz = "Asia/Kolkata"),
    posixct_no_tzone = structure(1.7e9, class = c("POSIXct", "POSIXt")),
    posixlt = as.POSIXlt("2024-12-31 23:59:59", tz = "Europe/Berlin"),
    difftime = as.difftime(c(1.5, NA), units = "hours"),
    data_frame = df,
    data_frame_big = data.frame(x = make_atomic("double", 16385), y = make_atomic("character", 16385)),
    data_frame_empty = data.frame(),
    deep_list = Reduce(function(acc, i) list(acc, i), 1:100, NULL),
    deep_list_1000 = Reduce(function(acc, i) list(i, acc), 1:1000, "bottom"),
    deep_pairlist = Reduce(function(acc, i) pairlist(acc, i), 1:100, NULL),
    pairlist = as.pairlist(list(a = 1, b = "x", c = NULL, d = list(1))),
    pairlist_formals = as.pairlist(alist(x = , y = 2, ... = )),
    list_with_missing = alist(a = , b = 1),
    empty_list = list(),
    null = NULL,
    list_of_nulls = list(NULL, NULL, a = NULL),
    symbol = as.name("a_symbol"),
    symbol_odd = as.name("with space \u00e9"),
    call = quote(f(x, y = 2, ...)),
    call_nested = quote(function(a, b = 2) { if (a) b else stop("no") }),
    call_ops = quote(-x + y[[1]]$z@w %in% ~q),
    expression = expression(a + 1, "s", 2L, b),
    formula = fm,
    formula_one_sided = one_sided,
    condition_error = simpleError("boom", call = quote(f(x))),
    condition_warning = simpleWarning("careful"),
    condition_custom = structure(class = c("myCondition", "condition"), list(message = "m", call = NULL, data = 1:3)),
    condition_caught = tryCatch(stop("caught"), error = identity),
    s4 = methods::new("CorpusPerson", name = "Ada", age = 36),
    s4_contains = methods::new("CorpusNum", c(1, 2.5), unit = "m"),
    builtin = sum,
    special = `if`,
    base_closure = mean,
    namespace_closure = stats::sd,
    closure_bytecode = compiler::cmpfun(global_fun(function(x, y = 2) x * y + 1)),
    global_env = globalenv(),
    empty_env = emptyenv(),
    base_env = baseenv(),
    namespace = asNamespace("stats"),
    altrep_compact = 1:1e7,
    altrep_compact_double = (2^31):(2^31 + 1e7),
    altrep_deferred = as.character(1:1e5),
    altrep_deferred_double = as.character(c(1.5, 2.25, -3)),
    utf8 = utf8,
    latin1 = latin1,
    latin1_marked = latin1_marked,
    bytes = bytes,
    mixed_encodings = c("ascii", utf8, latin1, bytes, NA),
    names_in_encodings = structure(1:3, names = c(utf8, latin1, "plain"))
  )
  out <- c(out, values)

  # Cases holding environments (see by_contents).
  env <- list2env(list(a = 1:3, b = "x", big = make_atomic("double", 16385)), parent = globalenv())
  inner <- list2env(list(v = "inner"), parent = list2env(list(w = "outer"), parent = globalenv()))
  cycle <- new.env(parent = globalenv())
  cycle$self <- cycle
  cycle$n <- 1L
  locked <- list2env(list(a = 1, b = 2), parent = globalenv())
  lockEnvironment(locked, bindings = TRUE)
  active <- new.env(parent = globalenv())
  makeActiveBinding("ab", global_fun(function() 42), active)
  promised <- new.env(parent = globalenv())
  delayedAssign("p", 1 + 1, eval.env = globalenv(), assign.env = promised)
  classed <- structure(list2env(list(z = TRUE), parent = globalenv()), class = "myenv", tag = "t")
  counter <- global_fun(function() i <<- i + 1)
  environment(counter) <- list2env(list(i = 0), parent = globalenv())
  fm_local <- y ~ x
  environment(fm_local) <- list2env(list(w = 1), parent = globalenv())
  refs <- list(
    env = env,
    env_nested = inner,
    env_cycle = cycle,
    env_locked = locked,
    env_active = active,
    env_promise = promised,
    env_classed = classed,
    env_twice = list(env, env),
    closure_local = counter,
    closure_srcref = with_source("function(x, y = 2) {\n  # a comment the srcref keeps\n  x + y\n}"),
    closure_srcref_bytecode = with_source("function(n) {\n  s <- 0\n  for (i in seq_len(n)) s <- s + i\n  s\n}", compile = TRUE),
    formula_local = fm_local,
    extptr_plain = native_pointer()
  )
  c(out, refs)
}

# The random corpus: nested objects of random types, lengths (boundary ones among them),
# attributes and encodings.
random_lengths <- c(2047:2049, 4095:4097, 8095:8097, 16383:16385)
random_pool <- c("a", "bc", "", NA, "NA", "\u00e9t\u00e9", "\u65e5\u672c", iconv("caf\u00e9", "UTF-8", "latin1"),
                 `Encoding<-`(rawToChar(as.raw(c(0xff, 0x41))), "bytes"))
pick <- function(x) x[[sample.int(length(x), 1L)]]
random_length <- function() {
  u <- runif(1L)
  if (u < 0.6) sample(0:8, 1L) else if (u < 0.93) sample(9:300, 1L) else pick(random_lengths)
}
random_double <- function(n) {
  x <- rnorm(n) * 10^sample(-300:300, n, TRUE)
  k <- sample(0:min(n, 3L), 1L)
  x[sample.int(n, k)] <- sample(c(NA, NaN, Inf, -Inf, -0, 0), k, TRUE)
  x
}
random_atomic <- function(type, n) {
  switch(type,
         logical = sample(c(TRUE, FALSE, NA), n, TRUE),
         integer = ifelse(runif(n) < 0.05, NA_integer_, sample.int(2e9, n, TRUE) - 1000000000L),
         double = random_double(n),
         complex = complex(real = random_double(n), imaginary = random_double(n)),
         character = sample(random_pool, n, TRUE),
         raw = as.raw(sample(0:255, n, TRUE)))
}
random_object <- function(depth) {
  kinds <- c(atomic_types, "list", "null", "factor", "date", "posixct", "data.frame", "pairlist", "call",
             "symbol", "formula", "compact", "deferred", "long_string")
  weights <- c(8, 8, 8, 5, 8, 5, if (depth > 0) 14 else 0, 2, 3, 2, 2, if (depth > 0) 3 else 0,
               if (depth > 0) 2 else 0, 2, 2, 1, 1, 1, 0.5)
  kind <- sample(kinds, 1L, prob = weights)
  n <- random_length()
  x <- switch(kind,
              list = lapply(seq_len(sample(0:5, 1L)), function(i) random_object(depth - 1L)),
              null = NULL,
              factor = {
                levels <- unique(sample(c("a", "b", "c", "\u00e9"), 3L, TRUE))
                factor(sample(c(levels, NA), n, TRUE), levels = levels)
              },
              date = structure(sample(c(-1e5:1e5, NA), n, TRUE), class = "Date"),
              posixct = structure(random_double(n), class = c("POSIXct", "POSIXt"), tzone = pick(c("UTC", "America/New_York", ""))),
              data.frame = {
                rows <- if (runif(1L) < 0.1) pick(random_lengths) else sample(0:5, 1L)
                cols <- lapply(seq_len(sample(1:3, 1L)), function(i) random_atomic(pick(atomic_types), rows))
                if (rows <= 5L && runif(1L) < 0.3) cols <- c(cols, list(I(lapply(seq_len(rows), function(i) random_object(0L)))))
                structure(cols, names = paste0("c", seq_along(cols)), class = "data.frame", row.names = .set_row_names(rows))
              },
              pairlist = as.pairlist(lapply(seq_len(sample(1:4, 1L)), function(i) random_object(depth - 1L))),
              call = as.call(c(as.name(pick(c("f", "+", "list", "[["))),
                               lapply(seq_len(sample(0:3, 1L)), function(i) random_atomic(pick(atomic_types), sample(0:3, 1L))))),
              symbol = as.name(pick(c("x", "y z", "\u00e9"))),
              formula = structure(quote(y ~ x), class = "formula", .Environment = globalenv()),
              compact = seq_len(n),
              deferred = as.character(seq_len(n)),
              long_string = c(long_string(pick(c(16383, 16384, 16385, 32769))), pick(random_pool)),
              random_atomic(kind, n))
  if (is.null(x) || is.symbol(x)) return(x)
  if ((is.atomic(x) || is.list(x)) && !is.data.frame(x) && length(x) && runif(1L) < 0.25) {
    names(x) <- sample(c("a", "", NA, "\u00e9", "b"), length(x), TRUE)
  }
  if (is.atomic(x) && is.null(attr(x, "class")) && length(x) >= 2L && length(x) %% 2L == 0L && runif(1L) < 0.1) {
    dim(x) <- c(2L, length(x) %/% 2L)
  }
  if (runif(1L) < 0.1) class(x) <- c("random_class", oldClass(x))
  if (runif(1L) < 0.15) attr(x, "random_attr") <- random_object(max(depth - 1L, 0L))
  x
}
random_corpus <- function(n = 3000L, seed = 20240601L) with_seed(seed, lapply(seq_len(n), function(i) random_object(3L)))

# What a daemon needs to build both corpora, given to daemons as one environment: everywhere()
# puts its contents in their global environments.
helper_names <- c("same", "compare_cases", "with_seed", "atomic_types", "corpus_lengths", "string_pool",
                  "make_atomic", "long_string", "with_source", "native_pointer", "global_fun", "by_contents", "build_corpus",
                  "random_lengths", "random_pool", "pick", "random_length", "random_double", "random_atomic",
                  "random_object", "random_corpus")
helpers <- list2env(mget(helper_names), parent = emptyenv())

cases <- build_corpus()
keys <- names(cases)
rnd <- random_corpus()
check("the corpus builds the same twice (the comparisons depend on it)", all(compare_cases(build_corpus(), cases, by_contents)))

# Checks a list of values that came back against the cases, one check per case.
check_each <- function(path, got, want = cases) {
  ok <- compare_cases(got, want, by_contents)
  for (k in names(want)) check(sprintf("%s: %s%s", path, k, if (is.list(got)) why(got[[k]]) else why(got)), ok[[k]])
}
# Checks daemon-side comparisons (TRUE per case, in a named list or logical vector) that came
# back; anything else (an error) fails every case.
check_true <- function(path, got) {
  whole <- !(is.list(got) || is.logical(got)) || is.null(names(got))
  for (k in keys) {
    v <- if (whole) got else if (k %in% names(got)) got[[k]]
    check(sprintf("%s: %s%s", path, k, why(v)), identical(v, TRUE))
  }
}
# Checks a random batch that came back, naming the first objects that differ.
check_random <- function(path, got, want) {
  if (!is.list(got) || length(got) != length(want)) return(check(sprintf("%s (%d objects; all wrong)%s", path, length(want), why(got)), FALSE))
  bad <- which(!mapply(same, got, want))
  check(sprintf("%s (%d objects; wrong: %s)%s", path, length(want), paste(head(bad, 10L), collapse = ", "),
                if (length(bad)) why(got[[bad[1L]]]) else ""), !length(bad))
}

lap("daemons(2)")
daemons(2)
built <- values_of(everywhere({ ref <<- build_corpus(); rnd <<- random_corpus(); TRUE }, helpers))
check("everywhere builds the corpora on each daemon", identical(built, list(TRUE, TRUE)))

# mirai(): to the daemon as `...` and as `.args` (checked there against its own copy), back
# as a value built there, and there and back.
ms <- list(
  dots_there = lapply(keys, function(k) mirai(same(x, ref[[k]], k %in% by_contents), x = cases[[k]], k = k)),
  args_there = lapply(keys, function(k) mirai(same(x, ref[[k]], k %in% by_contents), .args = list(x = cases[[k]], k = k))),
  back = lapply(keys, function(k) mirai(ref[[k]], .args = list(k = k))),
  dots_echo = lapply(keys, function(k) mirai({ x }, x = cases[[k]])),
  args_echo = lapply(keys, function(k) mirai({ x }, .args = list(x = cases[[k]])))
)
got <- lapply(ms, function(m) `names<-`(values_of(m), keys))
rm(ms)
check("`...` land in the daemon's global environment, `.args` in the task's own",
      identical(value_of(mirai(c(exists("a", envir = globalenv(), inherits = FALSE), exists("b", envir = globalenv(), inherits = FALSE),
                                 exists("b", envir = environment(), inherits = FALSE)), a = 1, .args = list(b = 2))), c(TRUE, FALSE, TRUE)))
check_true("mirai ... to the daemon", got$dots_there)
check_true("mirai .args to the daemon", got$args_there)
check_each("mirai value built on the daemon", got$back)
check_each("mirai ... there and back", got$dots_echo)
check_each("mirai .args there and back", got$args_echo)

# What the generic comparison cannot say about references, checked directly on what came back
# through `...`: environments by their bindings (identical() on environments is identity),
# closures by formals, body and source reference (their environments are copies).
r <- got$dots_echo
contents <- function(e) { n <- sort(ls(e, all.names = TRUE)); mget(n, envir = e) }
check("environment: bindings", identical(contents(r$env), contents(cases$env)) && identical(parent.env(r$env), globalenv()))
check("environment: enclosures", identical(r$env_nested$v, "inner") && identical(get("w", envir = r$env_nested), "outer") &&
        identical(contents(parent.env(r$env_nested)), list(w = "outer")))
check("environment: a cycle stays a cycle", identical(r$env_cycle$self, r$env_cycle))
check("environment: sent twice, one environment", identical(r$env_twice[[1L]], r$env_twice[[2L]]) &&
        identical(contents(r$env_twice[[1L]]), contents(cases$env)))
check("environment: locked", identical(c(environmentIsLocked(r$env_locked), bindingIsLocked("a", r$env_locked)), c(TRUE, TRUE)))
check("environment: active binding", identical(bindingIsActive("ab", r$env_active), TRUE) && identical(r$env_active$ab, 42))
check("environment: unforced promise", identical(substitute(p, r$env_promise), quote(1 + 1)) && identical(r$env_promise$p, 2))
check("environment: attributes", identical(attributes(r$env_classed), list(class = "myenv", tag = "t")))
check("closure: code, and its environment's bindings",
      identical(r$closure_local, cases$closure_local, ignore.environment = TRUE) &&
        identical(contents(environment(r$closure_local)), list(i = 0)) && identical(r$closure_local(), 1))
f <- cases$closure_srcref
g <- r$closure_srcref
check("closure: srcref text and position", identical(as.character(attr(g, "srcref")), as.character(attr(f, "srcref"))) &&
        identical(as.integer(attr(g, "srcref")), as.integer(attr(f, "srcref"))) &&
        any(grepl("a comment the srcref keeps", capture.output(print(g)), fixed = TRUE)))
check("closure: srcfile contents", identical(contents(attr(attr(g, "srcref"), "srcfile")), contents(attr(attr(f, "srcref"), "srcfile"))))
check("closure: formals and body", identical(formals(g), formals(f)) && identical(deparse(body(g)), deparse(body(f))) && identical(g(1), 3))
f <- cases$closure_srcref_bytecode
g <- r$closure_srcref_bytecode
# (identical(ignore.bytecode = FALSE) compares byte code by address: FALSE even after R's own
# serialize() and unserialize(). That the code is still compiled shows when it prints.)
compiled <- function(f) any(grepl("<bytecode", capture.output(print(f)), fixed = TRUE))
check("closure: byte code kept", identical(g, f, ignore.environment = TRUE) && compiled(g) && identical(g(10L), 55))
check("closure: byte code of a global function", identical(r$closure_bytecode, cases$closure_bytecode) && compiled(r$closure_bytecode) &&
        identical(r$closure_bytecode(2), 5))
check("formula: its environment's bindings", identical(`attr<-`(r$formula_local, ".Environment", NULL), `attr<-`(cases$formula_local, ".Environment", NULL)) &&
        identical(contents(environment(r$formula_local)), list(w = 1)))
check("external pointer: comes back as R's own serialization gives it (a null pointer, its attributes kept)",
      identical(r$extptr_plain, unserialize(serialize(cases$extptr_plain, NULL))))
# Sign of zero (identical() has 0 == -0), NaN is not NA, encodings (identical() compares
# strings after translation).
check("-0 keeps its sign", identical(1 / r$minus_zero, -Inf) && identical(1 / got$back$minus_zero, -Inf) &&
        identical(1 / r$double_special[5L], -Inf))
check("NaN stays NaN, NA stays NA", identical(is.nan(r$double_special[1:2]), c(FALSE, TRUE)) && identical(is.na(r$double_special[1:2]), c(TRUE, TRUE)))
for (k in c("utf8", "latin1", "latin1_marked", "bytes", "mixed_encodings", "utf8_long")) {
  check(sprintf("encoding of %s: there and back, and from the daemon", k),
        identical(Encoding(r[[k]]), Encoding(cases[[k]])) && identical(Encoding(got$back[[k]]), Encoding(cases[[k]])) &&
          identical(Encoding(got$args_echo[[k]]), Encoding(cases[[k]])))
}
# A package environment travels by name (R warns, writing one, that it may not be attached where
# it is read; here it is). The daemon's own such warning, returning it, shows on stderr when the
# daemon exits.
check("package environment there and back, and on the daemon",
      identical(suppressWarnings(value_of(mirai({ x }, x = as.environment("package:stats")))), as.environment("package:stats")) &&
        identical(suppressWarnings(value_of(mirai(identical(x, as.environment("package:stats")), .args = list(x = as.environment("package:stats"))))), TRUE))
check("encodings on the daemon", identical(value_of(mirai(Encoding(x), x = cases$mixed_encodings)), Encoding(cases$mixed_encodings)))
check("names keep their encodings", identical(Encoding(names(r$names_in_encodings)), Encoding(names(cases$names_in_encodings))))
# ALTREP forms: a compact sequence and a deferred string stay compact (their serialization is
# a few bytes, as R's own round trip keeps them), on the daemon and back.
check("ALTREP compact sequence stays compact",
      identical(value_of(mirai(length(serialize(x, NULL)) < 1000, x = 1:1e7)), TRUE) && length(serialize(got$back$altrep_compact, NULL)) < 1000 &&
        identical(got$back$altrep_compact, 1:1e7))
check("ALTREP deferred string stays deferred", identical(value_of(mirai(length(serialize(x, NULL)) < 1e5, x = as.character(1:1e5))), TRUE) &&
        identical(got$dots_echo$altrep_deferred, as.character(1:1e5)))
check("S4 objects are still S4 and valid", isS4(r$s4) && isTRUE(methods::validObject(r$s4, test = TRUE)) && identical(r$s4@name, "Ada"))
check("conditions still work as conditions", identical(tryCatch(stop(r$condition_error), error = conditionMessage), "boom"))
rm(r, got, f, g)

lap("mirai_map(): each case")
# mirai_map(): each case as an item (there and back; checked on the daemon; built there).
pairs <- lapply(keys, function(k) list(k = k, x = cases[[k]]))
got <- list(
  echo = values_of(mirai_map(cases, function(x) x)),
  there = values_of(mirai_map(pairs, function(p) same(p$x, ref[[p$k]], p$k %in% by_contents))),
  back = values_of(mirai_map(keys, function(k) ref[[k]]))
)
names(got$echo) <- names(got$there) <- names(got$back) <- keys
check_each("mirai_map item there and back", got$echo)
check_true("mirai_map item to the daemon", got$there)
check_each("mirai_map value built on the daemon", got$back)
# The whole corpus at once as mirai_map's `...` (globals) and `.args` (arguments of .f).
dots <- values_of(mirai_map(1:2, function(i) compare_cases(all_sent, ref, by_contents), all_sent = cases))
args <- values_of(mirai_map(1:2, function(i, all_sent) compare_cases(all_sent, ref, by_contents), .args = list(all_sent = cases)))
check_true("mirai_map ... (the whole corpus) to the daemon", as.list(dots[[1L]]))
check_true("mirai_map .args (the whole corpus) to the daemon", as.list(args[[2L]]))
rm(got, pairs, dots, args)

lap("everywhere(): the whole")
# everywhere(): the whole corpus into each daemon's global environment, as `...` and with `<<-`
# from `.args`; checked there, read back by a later mirai, and returned by everywhere itself.
invisible(values_of(everywhere(NULL, sent_dots = cases)))
invisible(values_of(everywhere(sent_args <<- y, .args = list(y = cases))))
there <- values_of(everywhere(list(dots = compare_cases(sent_dots, ref, by_contents), args = compare_cases(sent_args, ref, by_contents))))
on_both <- function(part) {
  if (!all(vapply(there, is.list, NA))) return(there[!vapply(there, is.list, NA)][[1L]])
  vapply(keys, function(k) all(vapply(there, function(t) isTRUE(t[[part]][k]), NA)), NA)
}
check_true("everywhere ... to each daemon", on_both("dots"))
check_true("everywhere .args and <<- to each daemon", on_both("args"))
check_each("everywhere's global read back by a mirai", value_of(mirai(sent_dots)))
check_each("everywhere's <<- global read back by a mirai", value_of(mirai(sent_args)))
back <- values_of(everywhere(ref))
check_each("everywhere value built on daemon 1", back[[1L]])
check_each("everywhere value built on daemon 2", back[[2L]])
invisible(everywhere(rm(list = c("sent_dots", "sent_args"), envir = globalenv())))
rm(there, back)

lap("The random corpus: each object")
# The random corpus: each object as a mirai_map item, there and back and checked on the
# daemon; in batches as `...`, as `.args` and built on the daemon.
check_random("random: mirai_map there and back", values_of(mirai_map(rnd, function(x) x)), rnd)
there <- values_of(mirai_map(lapply(seq_along(rnd), function(i) list(i = i, x = rnd[[i]])), function(p) same(p$x, rnd[[p$i]])))
check("random: mirai_map to the daemon", identical(unlist(there), rep(TRUE, length(rnd))))
batches <- split(seq_along(rnd), rep(1:6, length.out = length(rnd)))
ms <- lapply(batches, function(idx) list(
  dots_there = mirai(all(mapply(same, x, rnd[idx])), x = rnd[idx], idx = idx),
  args_there = mirai(all(mapply(same, x, rnd[idx])), .args = list(x = rnd[idx], idx = idx)),
  back = mirai(rnd[idx], idx = idx),
  dots_echo = mirai({ x }, x = rnd[idx]),
  args_echo = mirai({ x }, .args = list(x = rnd[idx]))
))
for (b in seq_along(batches)) {
  idx <- batches[[b]]
  v <- lapply(ms[[b]], value_of)
  check(sprintf("random batch %d: ... to the daemon%s", b, why(v$dots_there)), identical(v$dots_there, TRUE))
  check(sprintf("random batch %d: .args to the daemon%s", b, why(v$args_there)), identical(v$args_there, TRUE))
  check_random(sprintf("random batch %d: built on the daemon", b), v$back, rnd[idx])
  check_random(sprintf("random batch %d: ... there and back", b), v$dots_echo, rnd[idx])
  check_random(sprintf("random batch %d: .args there and back", b), v$args_echo, rnd[idx])
}
rm(ms, v, there)

lap("Vectors of 1e7")
# Vectors of 1e7 elements: there and back as `...`, checked on the daemon as `.args`, and built
# on the daemon (mirai() only: the other paths take the same bytes, and these take seconds
# each). All at once, so both daemons work; some hundreds of MB in all. Compared by identical(),
# with what it passes over checked where it is (the head: -0 and NaN; encodings): serializing
# each twice more would take longer than the round trips.
same_big <- function(got, want) {
  identical(got, want) && same(head(got, 1000L), head(want, 1000L)) && (!is.character(want) || identical(Encoding(got), Encoding(want)))
}
big <- lapply(`names<-`(atomic_types, atomic_types), make_atomic, 1e7)
ms <- lapply(atomic_types, function(type) list(
  echo = mirai({ x }, x = big[[type]]),
  there = mirai(same_big(x, make_atomic(type, 1e7)), .args = list(x = big[[type]], type = type, same_big = same_big)),
  back = mirai(make_atomic(type, 1e7), type = type)
))
for (i in seq_along(atomic_types)) {
  type <- atomic_types[i]
  v <- lapply(ms[[i]], value_of)
  ms[i] <- list(NULL)
  check(sprintf("1e7 %s: ... there and back%s", type, why(v$echo)), same_big(v$echo, big[[type]]))
  check(sprintf("1e7 %s: .args to the daemon%s", type, why(v$there)), identical(v$there, TRUE))
  check(sprintf("1e7 %s: built on the daemon%s", type, why(v$back)), same_big(v$back, big[[type]]))
}
rm(big, ms, v)
invisible(gc())
daemons(0)

lap("A cluster: parLapply")
# A cluster: parLapply over the cases and the random corpus (chunks of them per node).
cl <- make_cluster(2)
parallel::clusterExport(cl, helper_names)
built <- tryCatch(parallel::clusterEvalQ(cl, { ref <- build_corpus(); rnd <- random_corpus(); TRUE }), error = conditionMessage)
check("cluster nodes build the corpora", identical(built, list(TRUE, TRUE)))
par <- function(X, fun) tryCatch(parallel::parLapply(cl, X, fun), error = function(e) structure(conditionMessage(e), class = "hostError"))
check_each("parLapply there and back", par(cases, function(x) x))
there <- par(lapply(keys, function(k) list(k = k, x = cases[[k]])), function(p) same(p$x, ref[[p$k]], p$k %in% by_contents))
check_true("parLapply to the node", if (is.list(there)) `names<-`(there, keys) else there)
back <- par(keys, function(k) ref[[k]])
check_each("parLapply value built on the node", if (is.list(back)) `names<-`(back, keys) else back)
check_random("random: parLapply there and back", par(rnd, function(x) x), rnd)
there <- par(lapply(seq_along(rnd), function(i) list(i = i, x = rnd[[i]])), function(p) same(p$x, rnd[[p$i]]))
check("random: parLapply to the node", identical(unlist(there), rep(TRUE, length(rnd))))
check_random("random: parLapply built on the node", par(seq_along(rnd), function(i) rnd[[i]]), rnd)
stop_cluster(cl)
rm(there, back)

lap("External pointers through")
# External pointers through serial_config: a class on an external pointer is written by its
# sfunc and read back by its ufunc (which marks what it makes), both ways, by every path.
# (Each pointer a new one: methods::new("externalptr") hands out one and the same object, whose
# attributes every "new" pointer would then share.)
make_ptr <- function(payload) structure(getDLLRegisteredRoutines("stats")$.Call$cutree$address, class = "corpus_ptr", payload = payload)
ptr_cfg <- serial_config("corpus_ptr",
                         function(x) serialize(attr(x, "payload"), NULL),
                         function(r) structure(getDLLRegisteredRoutines("stats")$.Call$cutree$address, class = "corpus_ptr",
                                               payload = unserialize(r), restored = TRUE))
restored <- function(x, payload) inherits(x, "corpus_ptr") && typeof(x) == "externalptr" && isTRUE(attr(x, "restored")) && identical(attr(x, "payload"), payload)
payloads <- list(small = list(a = 1, b = "\u00e9"), at_16k = make_atomic("raw", 16385), big = make_atomic("double", 20000),
                 nested = list(cases$data_frame, cases$factor, cases$deep_list))
ptrs <- lapply(payloads, make_ptr)
daemons(2, serial = ptr_cfg)
for (k in names(payloads)) {
  p <- payloads[[k]]
  check(sprintf("serial_config %s: ... to the daemon", k), identical(value_of(mirai(restored(x, p), x = ptrs[[k]], p = p, restored = restored)), TRUE))
  check(sprintf("serial_config %s: .args to the daemon", k), identical(value_of(mirai(restored(x, p), .args = list(x = ptrs[[k]], p = p, restored = restored))), TRUE))
  check(sprintf("serial_config %s: built on the daemon", k), restored(value_of(mirai(make_ptr(p), p = p, make_ptr = make_ptr)), p))
  check(sprintf("serial_config %s: there and back", k), restored(value_of(mirai({ x }, x = ptrs[[k]])), p))
}
mixed <- list(ptrs$small, 1:3, ptrs$big, list(ptrs$at_16k, "x"), ptrs$small)
got <- value_of(mirai({ x }, .args = list(x = mixed)))
check("serial_config: pointers among other values", is.list(got) && restored(got[[1L]], payloads$small) && identical(got[[2L]], 1:3) &&
        restored(got[[3L]], payloads$big) && restored(got[[4L]][[1L]], payloads$at_16k) && identical(got[[4L]][[2L]], "x"))
# (R's serializer calls the hook at each occurrence of an object, not once: the one pointer
# comes back as two, each restored, as with R's own serialize().)
check("serial_config: one pointer sent twice comes back twice", is.list(got) && restored(got[[5L]], payloads$small))
holder <- list2env(list(p = ptrs$nested, v = 1), parent = globalenv())
got <- value_of(mirai({ x }, x = holder))
check("serial_config: a pointer in an environment", is.environment(got) && restored(got$p, payloads$nested) && identical(got$v, 1))
got <- values_of(mirai_map(ptrs, function(x) x))
check("serial_config: mirai_map there and back", all(mapply(restored, got, payloads)))
got <- values_of(mirai_map(names(payloads), function(k, restored, payloads) restored(ptrs[[k]], payloads[[k]]),
                           ptrs = ptrs, .args = list(restored = restored, payloads = payloads)))
check("serial_config: mirai_map ... to the daemon", identical(unlist(got), rep(TRUE, length(payloads))))
invisible(values_of(everywhere(held <<- x, .args = list(x = ptrs$at_16k))))
got <- values_of(everywhere(held))
check("serial_config: everywhere <<- and returned", length(got) == 2L && all(vapply(got, restored, NA, payloads$at_16k)))
check("serial_config: everywhere's global read back", restored(value_of(mirai(held)), payloads$at_16k))
# With a serialization hook in place, R calls it for every environment and external pointer:
# the typed and random corpora still come through whole.
check_each("with serial_config: mirai_map there and back", `names<-`(values_of(mirai_map(cases, function(x) x)), keys))
check_random("with serial_config: random batch there and back", value_of(mirai({ x }, x = rnd)), rnd)
daemons(0)
cl <- make_cluster(2, serial = ptr_cfg)
got <- tryCatch(parallel::parLapply(cl, ptrs, function(x) x), error = conditionMessage)
check("serial_config: parLapply there and back", is.list(got) && all(mapply(restored, got, payloads)))
got <- tryCatch(parallel::parLapply(cl, names(payloads), function(k, p, make_ptr) make_ptr(p[[k]]), p = payloads, make_ptr = make_ptr),
                error = conditionMessage)
check("serial_config: parLapply built on the node", is.list(got) && all(mapply(restored, got, payloads)))
stop_cluster(cl)
rm(got, holder, mixed)

lap("Large plain results")
# A result that is one large plain vector (from 1 MiB) becomes an R vector in the memory it was
# received into, outside R's vector heap: every type, either side of that size and of the
# 8-byte multiple R rounds a vector up to, built on the daemon; one with an attribute, which is
# unserialized as usual; writes to one; and memory given back once such results are dropped.
daemons(1)
adopt_sizes <- c(2^20 - 1, 2^20, 2^20 + 1, 2^20 + 7, 2^20 + 8, 3e6 + 5)
for (type in setdiff(atomic_types, "character")) {
  size <- c(logical = 4, integer = 4, double = 8, complex = 16, raw = 1)[[type]]
  for (bytes in adopt_sizes) {
    n <- ceiling(bytes / size)
    got <- value_of(mirai(make_atomic(type, n), make_atomic = make_atomic, type = type, n = n, string_pool = string_pool))
    check(sprintf("large plain result: %s of %d elements%s", type, n, why(got)), same(got, make_atomic(type, n)))
  }
}
held <- gc()[2L, "used"]
got <- value_of(mirai(seq_len(4e6) / 8))
check("large plain result: outside R's vector heap (gc() Vcells)", gc()[2L, "used"] - held < 1e6)
got[2L] <- -1
check("large plain result: written to", identical(got[1:3], c(0.125, -1, 0.375)) && identical(sum(got[-2L]), sum(seq_len(4e6) / 8) - 0.25))
attributed <- structure(seq_len(4e6) / 8, unit = "m")
check("large result with an attribute", same(value_of(mirai(x, x = attributed)), attributed))
rss_mb <- function() as.numeric(gsub("[^0-9]", "", grep("^VmRSS", readLines("/proc/self/status"), value = TRUE))) / 1024
before <- rss_mb()
for (i in 1:30) got <- value_of(mirai(raw(64e6)))
check(sprintf("30 dropped 64 MB results: memory given back (%.0f MB more)", rss_mb() - before), rss_mb() - before < 800)
rm(got, held, attributed, before)
daemons(0)
# With adoption off (MIRAI_NO_ADOPT), the same results are read by copying, past the envelope
# and the zeros after R's serialization.
copied <- system2(file.path(R.home("bin"), "Rscript"), c("-e", shQuote(paste(
  "library(mirai); daemons(1); held <- gc()[2L, 'used']",
  "v <- mirai(seq_len(4e6) / 8)[]; ok <- identical(v, seq_len(4e6) / 8) && gc()[2L, 'used'] - held > 3e6",
  "ok <- ok && identical(mirai(as.raw(seq_len(2^20 + 3) %% 256))[], as.raw(seq_len(2^20 + 3) %% 256))",
  "cat(if (ok) 'copied' else 'wrong'); daemons(0)", sep = "; "))),
  stdout = TRUE, stderr = FALSE, env = "MIRAI_NO_ADOPT=1")
check("large plain results read by copying with adoption off", identical(tail(copied, 1L), "copied"))

lap("A raw vector of more")
# A raw vector of more than 2^31 bytes, once: to the daemon as `.args` (where its length and
# half a million of its bytes are checked) and returned. One daemon, and freed at once: it takes
# some GiB in each process.
daemons(1)
n <- 2^31 + 10
big <- raw(n)
at <- c(seq(1, n, by = 4099), (2^31 - 70000):n)
big[at] <- as.raw(at %% 251)
ret <- value_of(mirai(list(ok = identical(length(x), n) && identical(x[at], want), x = x),
                      .args = list(x = big, n = n, at = at, want = big[at])))
check(sprintf("raw of 2^31 + 10 bytes: to the daemon%s", why(ret)), is.list(ret) && identical(ret$ok, TRUE))
check("raw of 2^31 + 10 bytes: returned", is.list(ret) && identical(ret$x, big))
rm(ret)
# Alone, it is a long vector taken over in place.
ret <- value_of(mirai(x, x = big))
check(sprintf("raw of 2^31 + 10 bytes: returned alone%s", why(ret)), identical(ret, big))
rm(big, ret, at)
invisible(gc())
invisible(value_of(mirai(gc())))
daemons(0)

lap("done")
finish("corpus")
