# Timing harness and the two benchmark roles (sender, receiver) of
# bench/bench.R. Each role runs in its own R process, started by bench.R
# with callr::r_bg(), which source()s this file there.

# Timing ------------------------------------------------------------------

# Sys.time() has microsecond resolution on Linux (clock_gettime). Calls that
# take microseconds are timed in batches of n calls; the time of one call is
# the batch time divided by n.
time_batch <- function(f, n) {
  t0 <- as.numeric(Sys.time())
  for (k in seq_len(n)) f(k)
  as.numeric(Sys.time()) - t0
}

# A method is list(name, run = function(k), before = function(n)):
# run(k) is the timed call (k = 1..n inside a batch), before(n) prepares a
# batch of n calls outside the timed region (e.g. removes what the previous
# batch wrote).
#
# Batch size: for each method, the smallest n whose batch takes at least
# `target` seconds (from the best of up to 3 warm-up calls), between 1 and max_n
# (so calls slower than `target` are timed one by one). The repetitions interleave the
# methods (rep 1 of every method, then rep 2, ...) so that a drift of the
# machine affects all methods alike. A full gc() precedes every batch.
measure <- function(methods, reps, max_n, target = 0.01) {
  n <- integer(length(methods))
  for (i in seq_along(methods)) {
    m <- methods[[i]]
    warm <- numeric()
    for (w in 1:3) {
      m$before(1L)
      invisible(gc(FALSE))
      warm[w] <- time_batch(m$run, 1L)
      if (warm[w] >= 10 * target) break # slow: timed one by one anyway
    }
    n[i] <- as.integer(min(max_n, max(1, ceiling(target / max(min(warm), 1e-9)))))
  }
  res <- matrix(NA_real_, reps, length(methods),
                dimnames = list(NULL, vapply(methods, `[[`, "", "name")))
  for (r in seq_len(reps)) {
    for (i in seq_along(methods)) {
      m <- methods[[i]]
      m$before(n[i])
      invisible(gc(FALSE))
      res[r, i] <- time_batch(m$run, n[i]) / n[i]
    }
  }
  list(times = res, batch = stats::setNames(n, colnames(res)))
}

make_object <- function(len, seed) {
  set.seed(seed)
  stats::runif(len)
}

tag_of <- function(size_id, k) sprintf("bench-%s-%d", size_id, k)
rds_of <- function(rds_dir, size_id, k) file.path(rds_dir, sprintf("bench-%s-%d.rds", size_id, k))

# Sender ------------------------------------------------------------------

# Makes the object, then measures yaplr send and saveRDS (each timed call
# writes a new tag / a new file; what the previous batch wrote is removed
# before the next batch, outside the timed region), serialize() and x + 0.
# Leaves the objects and files of the last batch for the receiver.
run_sender <- function(store, rds_dir, size_id, len, seed, reps, max_n) {
  library(yaplr)
  options(yaplr.dir = store, yaplr.timeout = 120)
  x <- make_object(len, seed)
  make_sure_server_is_started(quiet = TRUE)

  sent <- 0L
  saved <- 0L
  methods <- list(
    list(
      name = "yaplr send",
      before = function(n) {
        for (k in seq_len(sent)) remove_object(tag_of(size_id, k))
        sent <<- n
      },
      run = function(k) send_object(x, tag_of(size_id, k))
    ),
    list(
      name = "saveRDS",
      before = function(n) {
        for (k in seq_len(saved)) unlink(rds_of(rds_dir, size_id, k))
        saved <<- n
      },
      run = function(k) saveRDS(x, rds_of(rds_dir, size_id, k), compress = FALSE)
    ),
    list(
      name = "serialize",
      before = function(n) NULL,
      run = function(k) serialize(x, NULL, xdr = FALSE)
    ),
    list(
      name = "x + 0",
      before = function(n) NULL,
      run = function(k) x + 0
    )
  )
  res <- measure(methods, reps, max_n)
  res$n_objects <- sent
  res$n_files <- saved
  res$serialized_bytes <- length(serialize(x, NULL, xdr = FALSE))
  res$rds_bytes <- file.size(rds_of(rds_dir, size_id, 1L))
  res$pid <- Sys.getpid()
  res
}

# Receiver ----------------------------------------------------------------

# Measures yaplr retrieve (zero-copy and copy when retrieve_object() has a
# `copy` argument, else the plain call, labelled "copy"), readRDS and
# unserialize() of what the sender left, cycling over its n_objects tags /
# n_files files. Checks that what comes back is identical to the object,
# then removes the objects and files.
run_receiver <- function(store, rds_dir, size_id, len, seed, reps, max_n,
                         n_objects, n_files) {
  library(yaplr)
  options(yaplr.dir = store, yaplr.timeout = 120)
  x <- make_object(len, seed)
  ser <- serialize(x, NULL, xdr = FALSE)
  has_copy <- "copy" %in% names(formals(yaplr::retrieve_object)) &&
    !nzchar(Sys.getenv("YAPLR_BENCH_NO_COPY"))
  tag <- function(k) tag_of(size_id, (k - 1L) %% n_objects + 1L)
  file <- function(k) rds_of(rds_dir, size_id, (k - 1L) %% n_files + 1L)
  none <- function(n) NULL

  # Correctness, outside the timed region.
  for (k in unique(c(1L, n_objects))) {
    if (has_copy) {
      stopifnot(identical(retrieve_object(tag(k), copy = FALSE), x))
      stopifnot(identical(retrieve_object(tag(k), copy = TRUE), x))
    } else {
      stopifnot(identical(retrieve_object(tag(k)), x))
    }
  }
  for (k in unique(c(1L, n_files))) stopifnot(identical(readRDS(file(k)), x))
  stopifnot(identical(unserialize(ser), x))

  methods <- if (has_copy) {
    list(
      list(name = "yaplr retrieve (zero-copy)", before = none,
           run = function(k) retrieve_object(tag(k), copy = FALSE)),
      list(name = "yaplr retrieve (copy)", before = none,
           run = function(k) retrieve_object(tag(k), copy = TRUE))
    )
  } else {
    list(
      list(name = "yaplr retrieve (copy)", before = none,
           run = function(k) retrieve_object(tag(k)))
    )
  }
  methods <- c(methods, list(
    list(name = "readRDS", before = none, run = function(k) readRDS(file(k))),
    list(name = "unserialize", before = none, run = function(k) unserialize(ser))
  ))
  res <- measure(methods, reps, max_n)
  res$has_copy <- has_copy
  res$pid <- Sys.getpid()

  for (k in seq_len(n_objects)) remove_object(tag_of(size_id, k))
  for (k in seq_len(n_files)) unlink(rds_of(rds_dir, size_id, k))
  res
}
