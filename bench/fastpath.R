# Benchmark of the paths that the store's index serves without the helper
# (part of make bench):
#   Rscript bench/fastpath.R [max objects, default 1e6]
# Writes bench/fastpath.md next to this script, and the same tables as a
# section of bench/results.md:
# - look-ups of a 100 B object sent by another process: does_object_exist(),
#   object_info(), retrieve_object();
# - a zero-copy retrieve_object() of 8 MB, 80 MB and 800 MB vectors;
# - 100 B sends from 1 process and from 4 at once (calls per second in all);
# - a store of 1,000, 100,000 and 1,000,000 small objects: send, retrieve
#   and does_object_exist() per call, list_objects(), and the memory the
#   store and its helper use per object.
# Times are medians of 9 rounds. The store is private and removed at the end.

suppressPackageStartupMessages(library(yaplr))
stopifnot(requireNamespace("callr", quietly = TRUE))
script_dir <- local({
  arg <- grep("^--file=", commandArgs(FALSE), value = TRUE)
  if (length(arg)) dirname(normalizePath(sub("^--file=", "", arg[1]))) else normalizePath("bench")
})
out_md <- file.path(script_dir, "fastpath.md")
max_objects <- as.numeric(commandArgs(TRUE)[1])
if (is.na(max_objects)) max_objects <- 1e6
dir <- tempfile("yaplr-bench-fast-", tmpdir = "/dev/shm")
options(yaplr.dir = dir, yaplr.timeout = 60)
cleanup <- function() {
  try(quit_server(), silent = TRUE)
  unlink(dir, recursive = TRUE)
}
options(error = function() {
  cleanup()
  q(status = 1)
})
fmt_us <- function(s) sprintf("%.2f µs", s * 1e6)
rounds <- 9L

# The median over `rounds` of the time per call of `f`, n calls a round.
per_call <- function(f, n) {
  median(vapply(seq_len(rounds), function(r) {
    t0 <- Sys.time()
    for (i in seq_len(n)) f(i)
    as.numeric(Sys.time() - t0, units = "secs") / n
  }, 0))
}

# Run `f(dir, ...)` in a fresh R process; its value.
in_process <- function(f, ...) {
  callr::r(function(f, dir, ...) {
    suppressPackageStartupMessages(library(yaplr))
    options(yaplr.dir = dir, yaplr.timeout = 60)
    f(...)
  }, list(f = f, dir = dir, ...))
}

lookups <- list()
send_object(runif(9), "small")
for (mb in c(8, 80, 800)) send_object(runif(mb * 1e6 / 8), sprintf("v%d", mb))
res <- in_process(function(rounds, per_call) {
  environment(per_call) <- environment()
  stopifnot(length(retrieve_object("v80")) == 1e7)
  list(
    exists = per_call(function(i) does_object_exist("small"), 20000),
    absent = per_call(function(i) does_object_exist("absent"), 20000),
    info = per_call(function(i) object_info("small"), 20000),
    retrieve = per_call(function(i) retrieve_object("small"), 20000),
    v8 = per_call(function(i) retrieve_object("v8"), 2000),
    v80 = per_call(function(i) retrieve_object("v80"), 2000),
    v800 = per_call(function(i) retrieve_object("v800"), 2000)
  )
}, rounds = rounds, per_call = per_call)
for (mb in c(8, 80, 800)) remove_object(sprintf("v%d", mb))

# Small sends from k processes at once, for `secs` seconds each: calls per
# second in all.
sends_per_second <- function(k, secs = 3) {
  start <- as.numeric(Sys.time()) + 2
  ps <- lapply(seq_len(k), function(w) {
    callr::r_bg(function(dir, w, start, secs) {
      suppressPackageStartupMessages(library(yaplr))
      options(yaplr.dir = dir, yaplr.timeout = 60)
      x <- runif(9)
      send_object(x, sprintf("w%d-0", w))
      while (as.numeric(Sys.time()) < start) Sys.sleep(0.001)
      n <- 0L
      repeat {
        for (i in 1:100) send_object(x, sprintf("w%d-%d", w, i))
        n <- n + 100L
        if (as.numeric(Sys.time()) >= start + secs) break
      }
      n / (as.numeric(Sys.time()) - start)
    }, list(dir = dir, w = w, start = start, secs = secs))
  })
  for (p in ps) p$wait(120000)
  sum(vapply(ps, function(p) p$get_result(), 0))
}
one <- median(vapply(1:3, function(i) sends_per_second(1), 0))
four <- median(vapply(1:3, function(i) sends_per_second(4), 0))

# A store of n small objects.
mem_kb <- function(pid, field) {
  st <- readLines(sprintf("/proc/%d/status", pid))
  as.numeric(sub(sprintf("%s:\\s+([0-9]+) kB", field), "\\1", grep(sprintf("^%s:", field), st, value = TRUE)))
}
store_kb <- function() {
  # Blocks in use (the index is a sparse file).
  sum(as.numeric(system2("du", c("-k", "-s", dir), stdout = TRUE) |> sub(pattern = "\t.*", replacement = "")))
}
scale <- list()
have <- 0
x <- runif(9)
for (n in c(1e3, 1e5, 1e6)) {
  if (n > max_objects) break
  while (have < n) {
    k <- min(n - have, 10000)
    objs <- rep(list(x), k)
    names(objs) <- sprintf("o%d", have + seq_len(k))
    send_objects(objs)
    have <- have + k
  }
  invisible(gc())
  pid <- server_info()$pid
  tags <- sprintf("o%d", sample.int(n, 5000, replace = TRUE))
  t0 <- Sys.time()
  l <- list_objects()
  list_s <- as.numeric(Sys.time() - t0, units = "secs")
  stopifnot(nrow(l) >= n)
  scale[[length(scale) + 1L]] <- c(
    objects = n,
    send = per_call(function(i) send_object(x, tags[i]), 2000),
    retrieve = per_call(function(i) retrieve_object(tags[i]), 5000),
    exists = per_call(function(i) does_object_exist(tags[i]), 5000),
    list = list_s,
    store_bytes = store_kb() * 1024 / n,
    helper_bytes = mem_kb(pid, "RssAnon") * 1024 / n
  )
}

md <- c("# Fast path benchmark", "",
        sprintf("`Rscript bench/fastpath.R` on %s, %d cores, load %s.",
                format(Sys.Date()), parallel::detectCores(),
                paste(strsplit(readLines("/proc/loadavg"), " ")[[1]][1:3], collapse = ", ")),
        "", "Look-ups in a process other than the sender's (medians of 9 rounds):", "",
        "| what | per call |", "|---|---|",
        sprintf("| `does_object_exist()` of a 100 B object | %s |", fmt_us(res$exists)),
        sprintf("| `does_object_exist()` of a missing tag | %s |", fmt_us(res$absent)),
        sprintf("| `object_info()` of a 100 B object | %s |", fmt_us(res$info)),
        sprintf("| `retrieve_object()` of a 100 B object | %s |", fmt_us(res$retrieve)),
        sprintf("| zero-copy `retrieve_object()` of 8 MB | %s |", fmt_us(res$v8)),
        sprintf("| zero-copy `retrieve_object()` of 80 MB | %s |", fmt_us(res$v80)),
        sprintf("| zero-copy `retrieve_object()` of 800 MB | %s |", fmt_us(res$v800)),
        "", "100 B sends (`send_object()`), each process its own tags, 3 s, median of 3 runs:", "",
        "| processes | sends per second in all |", "|---|---|",
        sprintf("| 1 | %.0f |", one), sprintf("| 4 | %.0f (%.2fx one) |", four, four / one))
if (length(scale)) {
  md <- c(md, "", "A store of many small objects (`runif(9)`, sent with `send_objects()`); per call, tags at random:", "",
          "| objects | send | retrieve | exists | `list_objects()` | store bytes per object | helper bytes per object (RssAnon) |",
          "|---|---|---|---|---|---|---|",
          vapply(scale, function(s) sprintf("| %s | %s | %s | %s | %.3f s | %.0f | %.0f |",
                                            format(s[["objects"]], big.mark = ",", scientific = FALSE),
                                            fmt_us(s[["send"]]), fmt_us(s[["retrieve"]]), fmt_us(s[["exists"]]),
                                            s[["list"]], s[["store_bytes"]], s[["helper_bytes"]]), ""))
}
goal <- function(text, ok, shown) sprintf("| %s | %s | %s |", text, shown, if (ok) "**met**" else "**not met**")
views <- c(res$v8, res$v80, res$v800)
md <- c(md, "", "| Goal | Measured | Status |", "|---|---|---|",
        goal("`does_object_exist()` and `object_info()` under 5 µs", max(res$exists, res$info) < 5e-6,
             sprintf("%s and %s", fmt_us(res$exists), fmt_us(res$info))),
        goal("zero-copy retrieve of 80 MB under 20 µs", res$v80 < 20e-6, fmt_us(res$v80)),
        goal("zero-copy retrieve independent of size (800 MB within 1.5x of 8 MB)", res$v800 <= 1.5 * res$v8,
             sprintf("%s at 8 MB, %s at 800 MB", fmt_us(res$v8), fmt_us(res$v800))),
        goal("4 processes sending 100 B objects: at least 2x one process", four >= 2 * one,
             sprintf("%.2fx", four / one)))
writeLines(md, out_md)
cat(md, sep = "\n")

results_md <- file.path(script_dir, "results.md")
if (file.exists(results_md)) {
  old <- readLines(results_md)
  at <- grep("^## Fast path$", old)
  if (length(at)) {
    nxt <- grep("^## ", old)
    nxt <- nxt[nxt > at[1]]
    old <- c(old[seq_len(at[1] - 1L)], if (length(nxt)) c("", old[nxt[1]:length(old)]))
  }
  while (length(old) && !nzchar(old[length(old)])) old <- old[-length(old)]
  section <- c("", "## Fast path", "",
               "Written by `Rscript bench/fastpath.R` (run by `make bench`); also in",
               "[fastpath.md](fastpath.md).", "", md[-(1:2)])
  writeLines(c(old, section), results_md)
}
cleanup()
