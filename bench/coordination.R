# Benchmark of the coordination functions (part of make bench):
#   Rscript bench/coordination.R
# Writes bench/coordination.md next to this script, and the same table as a
# section of bench/results.md: counter_add() calls per
# second in one process and in 4 at once (with the increments checked),
# an uncontended acquire_lock() + release_lock() against filelock's lock() +
# unlock() of a file in /dev/shm, the time from send_object() in one process
# to the return of wait_object() in another, and the time a waiter takes to
# get a lock whose holder is killed. The store is private and removed at
# the end.

suppressPackageStartupMessages(library(yaplr))
stopifnot(requireNamespace("callr", quietly = TRUE))
script_dir <- local({
  arg <- grep("^--file=", commandArgs(FALSE), value = TRUE)
  if (length(arg)) dirname(normalizePath(sub("^--file=", "", arg[1]))) else normalizePath("bench")
})
out_md <- file.path(script_dir, "coordination.md")
dir <- tempfile("yaplr-bench-coord-", tmpdir = "/dev/shm")
options(yaplr.dir = dir, yaplr.timeout = 30)
# (A script's top level has no on.exit: the store is stopped and removed at
# the end, and by this hook if the script fails.)
cleanup <- function() {
  try(quit_server(), silent = TRUE)
  unlink(dir, recursive = TRUE)
}
options(error = function() {
  cleanup()
  q(status = 1)
})
fmt_us <- function(s) sprintf("%.2f µs", s * 1e6)
rows <- list()
add <- function(what, value) rows[[length(rows) + 1L]] <<- c(what, value)

# counter_add in one process: the median of 9 rounds (the machine may be
# shared; a round that another process interrupts is an outlier).
counter_add("warm")
n <- 50000L
rounds <- 9L
per_call <- vapply(seq_len(rounds), function(r) {
  system.time(for (i in seq_len(n)) counter_add("c1"))[["elapsed"]] / n
}, 0)
t <- median(per_call)
add("counter_add(), one process",
    sprintf("%s per call, %s calls/s (median of %d rounds of %s calls)", fmt_us(t),
            format(round(1 / t), big.mark = ",", scientific = FALSE), rounds, format(n, big.mark = ",")))
stopifnot(counter_get("c1") == n * rounds)

# 4 processes at once.
counter_set("c4", 0)
go <- tempfile("go-", tmpdir = "/dev/shm")
k <- 50000L
procs <- lapply(1:4, function(i) callr::r_bg(function(dir, go, k) {
  options(yaplr.dir = dir)
  yaplr::counter_add("c4", 0)
  while (!file.exists(go)) Sys.sleep(0.001)
  t0 <- Sys.time()
  for (j in seq_len(k)) yaplr::counter_add("c4")
  c(as.numeric(t0), as.numeric(Sys.time()))
}, list(dir = dir, go = go, k = k)))
Sys.sleep(2)
file.create(go)
for (p in procs) p$wait(300000)
span <- do.call(rbind, lapply(procs, function(p) p$get_result()))
unlink(go)
total <- counter_get("c4")
secs <- max(span[, 2]) - min(span[, 1])
add("counter_add(), 4 processes at once",
    sprintf("%s calls/s in all; %s of %s increments counted",
            format(round(4 * k / secs), big.mark = ","), format(total, big.mark = ",", scientific = FALSE),
            format(4 * k, big.mark = ",", scientific = FALSE)))

# Locks against filelock: rounds of each, interleaved, and the ratio of
# the medians.
l <- acquire_lock("l")
release_lock(l)
n <- 50000L
has_filelock <- requireNamespace("filelock", quietly = TRUE)
f <- tempfile("lock-", tmpdir = "/dev/shm")
ours <- theirs <- numeric()
for (r in seq_len(rounds)) {
  ours[r] <- system.time(for (i in seq_len(n)) release_lock(acquire_lock("l")))[["elapsed"]] / n
  if (has_filelock) {
    theirs[r] <- system.time(for (i in seq_len(n)) filelock::unlock(filelock::lock(f)))[["elapsed"]] / n
  }
}
unlink(f)
add("acquire_lock() + release_lock(), uncontended",
    sprintf("%s (median of %d rounds of %s)", fmt_us(median(ours)), rounds, format(n, big.mark = ",")))
if (has_filelock) {
  add("filelock::lock() + unlock() of a file in /dev/shm",
      sprintf("%s (yaplr is %.1fx faster)", fmt_us(median(theirs)), median(theirs) / median(ours)))
}

# Send in one process, wait_object() in another: latency.
reps <- 300L
waiter <- callr::r_bg(function(dir, reps) {
  options(yaplr.dir = dir)
  v <- 0
  got <- numeric()
  repeat {
    x <- yaplr::wait_object("ping", timeout = 30, after_version = v, with_version = TRUE)
    if (x$value < 0) break
    got <- c(got, as.numeric(Sys.time()) - x$value)
    v <- x$version
  }
  got
}, list(dir = dir, reps = reps))
Sys.sleep(1.5)
for (i in seq_len(reps)) {
  send_object(as.numeric(Sys.time()), "ping")
  Sys.sleep(0.003)
}
Sys.sleep(0.1)
send_object(-1, "ping")
waiter$wait(120000)
lat <- waiter$get_result()
add("send_object() in one process to wait_object() returning in another",
    sprintf("median %s, 99th percentile %s", fmt_us(median(lat)),
            fmt_us(quantile(lat, 0.99, names = FALSE))))

# A holder killed: how long until the next waiter has the lock.
holder <- callr::r_bg(function(dir) {
  options(yaplr.dir = dir)
  l <- yaplr::acquire_lock("k")
  cat("locked\n")
  Sys.sleep(600)
}, list(dir = dir), stdout = "|")
while (!grepl("locked", holder$read_output())) Sys.sleep(0.01)
waiter <- callr::r_bg(function(dir) {
  options(yaplr.dir = dir)
  l <- yaplr::acquire_lock("k", timeout = 60)
  as.numeric(Sys.time())
}, list(dir = dir))
Sys.sleep(1.5)
killed <- as.numeric(Sys.time())
holder$kill()
waiter$wait(60000)
add("a lock whose holder is killed (SIGKILL): until the next waiter has it",
    fmt_us(waiter$get_result() - killed))

md <- c("# Coordination benchmark", "",
        sprintf("`Rscript bench/coordination.R` on %s, %d cores, load %s.",
                format(Sys.Date()), parallel::detectCores(),
                paste(strsplit(readLines("/proc/loadavg"), " ")[[1]][1:3], collapse = ", ")),
        "", "| what | measured |", "|---|---|",
        vapply(rows, function(r) sprintf("| %s | %s |", r[1], r[2]), ""))
writeLines(md, out_md)
cat(md, sep = "\n")

# The same table as a section of bench/results.md (which bench.R, run first
# by make bench, writes anew): the section replaces an earlier one.
results_md <- file.path(script_dir, "results.md")
if (file.exists(results_md)) {
  old <- readLines(results_md)
  at <- grep("^## Coordination$", old)
  rest <- character()
  if (length(at)) {
    # Sections after it (written by later scripts) stay, after it.
    nxt <- grep("^## ", old)
    nxt <- nxt[nxt > at[1]]
    if (length(nxt)) rest <- c("", old[nxt[1]:length(old)])
    old <- old[seq_len(at[1] - 1L)]
  }
  while (length(old) && !nzchar(old[length(old)])) old <- old[-length(old)]
  section <- c("", "## Coordination", "",
               "Written by `Rscript bench/coordination.R` (run by `make bench` after bench.R); also in",
               "[coordination.md](coordination.md).", "", md[-(1:2)])
  while (length(section) && !nzchar(section[length(section)])) section <- section[-length(section)]
  writeLines(c(old, section, rest), results_md)
}
cleanup()
