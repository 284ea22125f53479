# Benchmark of yaplr: send / retrieve between two R processes against
# saveRDS / readRDS of a file in /dev/shm, and against the in-process bounds
# serialize() / unserialize() and x + 0.
#
#   Rscript bench/bench.R          (or: make bench)
#
# Writes bench/results.md and bench/results.png next to this script.
#
# For every object size, a sender process (callr::r_bg) makes the object,
# times yaplr send, saveRDS, serialize and x + 0, and exits leaving its last
# objects in the store and its last files in /dev/shm; then a receiver
# process, a different one, times yaplr retrieve, readRDS and unserialize.
# This script waits for each process with a deadline (no sleeps). The store
# is a private directory under /dev/shm, stopped with quit_server() and
# removed at the end, like the directory of the RDS files.

suppressPackageStartupMessages(library(yaplr))
stopifnot(requireNamespace("callr", quietly = TRUE))

wall_start <- Sys.time()
loadavg <- function() paste(strsplit(readLines("/proc/loadavg"), " ")[[1]][1:3], collapse = ", ")
load_start <- loadavg()

script_dir <- local({
  arg <- grep("^--file=", commandArgs(FALSE), value = TRUE)
  if (length(arg)) dirname(normalizePath(sub("^--file=", "", arg[1]))) else normalizePath("bench")
})
harness <- file.path(script_dir, "harness.R")
out_md <- file.path(script_dir, "results.md")
out_png <- file.path(script_dir, "results.png")
stopifnot(file.exists(harness), dir.exists("/dev/shm"))

# Object sizes: double vectors made with runif(). Sizes are decimal
# (1 KB = 1000 bytes) and count the 8-byte elements; the serialized size
# adds a 31-byte header.
sizes <- data.frame(
  id = c("100B", "10KB", "1MB", "80MB", "800MB"),
  label = c("100 B", "10 KB", "1 MB", "80 MB", "800 MB"),
  len = c(9, 1250, 125000, 1e7, 1e8),
  reps = c(51L, 51L, 31L, 11L, 5L),
  max_n = c(2000L, 2000L, 200L, 20L, 10L), # largest batch (calls timed together)
  stringsAsFactors = FALSE
)
sizes$bytes <- 8 * sizes$len
sizes$seed <- seq_len(nrow(sizes))

# YAPLR_BENCH_NO_COPY=1 measures as if retrieve_object() had no `copy` argument
# (to test that fallback).
has_copy <- "copy" %in% names(formals(yaplr::retrieve_object)) &&
  !nzchar(Sys.getenv("YAPLR_BENCH_NO_COPY"))
deadline <- 240 # seconds, for any one sender or receiver process

store <- tempfile("yaplr-bench-", tmpdir = "/dev/shm")
rds_dir <- tempfile("yaplr-bench-rds-", tmpdir = "/dev/shm")
log_dir <- tempfile("yaplr-bench-logs-")
dir.create(rds_dir, mode = "0700")
dir.create(log_dir)
options(yaplr.dir = store, yaplr.timeout = 60)

procs <- list()
cleanup <- function() {
  for (p in procs) if (p$is_alive()) p$kill()
  # Stops the helper and deletes every stored object; removes the store
  # directory when empty.
  try(quit_server(), silent = TRUE)
  unlink(c(store, rds_dir, log_dir), recursive = TRUE)
}

run_role <- function(role, size, extra = list()) {
  out <- file.path(log_dir, paste0(role, "-", size$id, ".out"))
  args <- c(list(harness = harness, role = role, store = store, rds_dir = rds_dir,
                 size_id = size$id, len = size$len, seed = size$seed,
                 reps = size$reps, max_n = size$max_n), extra)
  p <- callr::r_bg(
    function(harness, role, ...) {
      source(harness, local = TRUE)
      if (role == "sender") run_sender(...) else run_receiver(...)
    },
    args = args, stdout = out, stderr = "2>&1", supervise = TRUE
  )
  procs[[length(procs) + 1L]] <<- p
  t0 <- Sys.time()
  p$wait(timeout = deadline * 1000)
  if (p$is_alive()) {
    p$kill()
    stop(sprintf("%s for %s did not finish within %d s", role, size$label, deadline))
  }
  res <- tryCatch(p$get_result(), error = function(e) {
    cat(readLines(out), sep = "\n")
    stop(sprintf("%s for %s failed: %s", role, size$label, conditionMessage(e)), call. = FALSE)
  })
  cat(sprintf("  %-8s %-6s pid %-7d %5.1f s  batch sizes: %s\n", role, size$label, res$pid,
              as.numeric(difftime(Sys.time(), t0, units = "secs")),
              paste(sprintf("%s=%d", names(res$batch), res$batch), collapse = ", ")))
  res
}

# Run -------------------------------------------------------------------

cat(sprintf("yaplr benchmark: store %s, RDS files in %s\n", store, rds_dir))
results <- list()
tryCatch({
  for (i in seq_len(nrow(sizes))) {
    size <- sizes[i, ]
    s <- run_role("sender", size)
    r <- run_role("receiver", size, list(n_objects = s$n_objects, n_files = s$n_files))
    results[[size$id]] <- list(size = size, sender = s, receiver = r)
  }
}, finally = cleanup())

wall <- as.numeric(difftime(Sys.time(), wall_start, units = "secs"))
load_end <- loadavg()

# Summaries ---------------------------------------------------------------

fmt_time <- function(s) {
  ifelse(is.na(s), "n/a",
  ifelse(s < 1e-3, sprintf("%.3g µs", s * 1e6),
  ifelse(s < 1, sprintf("%.3g ms", s * 1e3), sprintf("%.3g s", s))))
}
fmt_ratio <- function(x) {
  ifelse(x >= 100, sprintf("%.0fx", x), ifelse(x >= 0.1, sprintf("%.2fx", x), sprintf("%.2gx", x)))
}

retrieve_names <- if (has_copy) {
  c("yaplr retrieve (zero-copy)", "yaplr retrieve (copy)")
} else {
  "yaplr retrieve (copy)"
}
method_names <- c("yaplr send", "saveRDS", "serialize", "x + 0",
                  retrieve_names, "readRDS", "unserialize")

summ <- do.call(rbind, lapply(results, function(res) {
  times <- cbind(res$sender$times, res$receiver$times)
  batch <- c(res$sender$batch, res$receiver$batch)
  do.call(rbind, lapply(method_names, function(m) {
    t <- times[, m]
    q <- stats::quantile(t, c(0, 0.25, 0.5, 0.75, 1), names = FALSE)
    data.frame(size = res$size$id, method = m, median = q[3], p25 = q[2], p75 = q[4],
               min = q[1], max = q[5], reps = length(t), batch = batch[[m]],
               stringsAsFactors = FALSE)
  }))
}))
med <- function(size_id, m) summ$median[summ$size == size_id & summ$method == m]

ratio_rows <- function(id) {
  rows <- list(
    c("yaplr send vs saveRDS", "saveRDS / send", med(id, "saveRDS") / med(id, "yaplr send")),
    c("yaplr send vs x + 0 (bound)", "send / (x + 0)", med(id, "yaplr send") / med(id, "x + 0")),
    c("yaplr send vs serialize", "send / serialize", med(id, "yaplr send") / med(id, "serialize"))
  )
  for (rn in retrieve_names) {
    rows <- c(rows, list(
      c(sprintf("%s vs readRDS", rn), "readRDS / retrieve", med(id, "readRDS") / med(id, rn)),
      c(sprintf("%s vs unserialize", rn), "retrieve / unserialize", med(id, rn) / med(id, "unserialize"))
    ))
  }
  rows
}

# Goals -----------------------------------------------------------------

default_retrieve <- retrieve_names[1] # what retrieve_object(tag) does
goal <- function(text, ok, shown) {
  sprintf("| %s | %s | %s |", text, shown,
          if (is.na(ok)) "not available" else if (ok) "**met**" else "**not met**")
}
# "faster" goal: baseline / yaplr >= target.
faster <- function(text, id, yaplr, base, target) {
  x <- med(id, base) / med(id, yaplr)
  goal(text, x >= target, sprintf("%s / %s = %s (%s vs %s)", base, yaplr, fmt_ratio(x),
                                  fmt_time(med(id, base)), fmt_time(med(id, yaplr))))
}
g <- c(
  faster("100 B send at least 2.5x faster than saveRDS", "100B", "yaplr send", "saveRDS", 2.5),
  faster(sprintf("100 B retrieve at least 1.5x faster than readRDS (%s, what `retrieve_object(tag)` does)",
                 default_retrieve), "100B", default_retrieve, "readRDS", 1.5),
  local({
    x <- med("80MB", "yaplr send") / med("80MB", "x + 0")
    goal("80 MB send within 1.5x of `x + 0`", x <= 1.5,
         sprintf("yaplr send / x + 0 = %s (%s vs %s)", fmt_ratio(x), fmt_time(med("80MB", "yaplr send")),
                 fmt_time(med("80MB", "x + 0"))))
  }),
  faster("80 MB send at least 1.8x faster than saveRDS", "80MB", "yaplr send", "saveRDS", 1.8),
  if (has_copy) {
    x <- med("80MB", "yaplr retrieve (zero-copy)")
    goal("80 MB zero-copy retrieve under 200 µs", x < 200e-6, sprintf("median %s", fmt_time(x)))
  } else {
    goal("80 MB zero-copy retrieve under 200 µs", NA, "`retrieve_object()` has no `copy` argument")
  },
  faster("80 MB copy retrieve at least 2x faster than readRDS", "80MB", "yaplr retrieve (copy)", "readRDS", 2)
)

# results.md --------------------------------------------------------------

meminfo <- readLines("/proc/meminfo")
mem_gb <- as.numeric(sub("^MemTotal: *([0-9]+) kB$", "\\1", grep("^MemTotal:", meminfo, value = TRUE))) / 1024^2
cpu <- unique(sub("^model name\\s*:\\s*", "", grep("^model name", readLines("/proc/cpuinfo"), value = TRUE)))
nproc <- system2("nproc", stdout = TRUE)
s1 <- results[[1]]$sender

md <- c(
  "# yaplr benchmark",
  "",
  "Generated by `make bench` (`Rscript bench/bench.R`); do not edit by hand.",
  "",
  sprintf("- Date: %s", format(Sys.time(), "%Y-%m-%d %H:%M:%S %Z")),
  sprintf("- Machine: %s, nproc %s, %.1f GiB memory, %s %s", paste(cpu, collapse = "; "), nproc,
          mem_gb, Sys.info()[["sysname"]], Sys.info()[["release"]]),
  sprintf("- %s, yaplr %s; `retrieve_object()` %s a `copy` argument", R.version.string,
          as.character(utils::packageVersion("yaplr")), if (has_copy) "has" else "has no"),
  sprintf("- Whole run (all sizes, all processes): %.0f s; load average (1, 5, 15 min) %s at the start, %s at the end",
          wall, load_start, load_end),
  "  (the machine may be shared: other processes compete for the cores and add noise, mostly to yaplr,",
  "  whose calls wait for its helper process to be scheduled).",
  "",
  "## What is measured",
  "",
  "- Objects: double vectors `runif(n)`; sizes are decimal and count the 8-byte elements:",
  sprintf("  - %s = `runif(%s)`: %s bytes of doubles, %s bytes serialized (`serialize(x, NULL, xdr = FALSE)`)",
          sizes$label, formatC(sizes$len, format = "d", big.mark = ","),
          formatC(sizes$bytes, format = "d", big.mark = ","),
          formatC(sapply(results, function(r) r$sender$serialized_bytes), format = "d", big.mark = ",")),
  "- Two processes per size, as users run yaplr: a **sender** R process makes the object and times",
  "  `send_object(x, tag)`, `saveRDS(x, file, compress = FALSE)` (file in `/dev/shm`),",
  "  `serialize(x, NULL, xdr = FALSE)` and `x + 0` (allocate + copy: the bound for writing the object once);",
  "  it exits, then a **receiver**, a different R process, times `retrieve_object(tag)`",
  if (has_copy) "  with `copy = FALSE` (zero-copy view) and `copy = TRUE`, `readRDS(file)` and `unserialize()` of the" else
    "  (no `copy` argument: labelled \"copy\"), `readRDS(file)` and `unserialize()` of the",
  "  `serialize(x, NULL, xdr = FALSE)` bytes. The receiver checks that both yaplr and readRDS return an",
  "  object `identical()` to the sent one. Processes are `callr::r_bg()`; the script waits for each with a",
  sprintf("  %d s deadline. The store is a private directory under `/dev/shm`, stopped with `quit_server()` at the end.", deadline),
  "- Every timed send / saveRDS writes a new tag / a new file; what the previous batch wrote is removed",
  "  outside the timed region. The receiver reads the tags and files the sender left, in turn.",
  "- Timing: `Sys.time()` (µs resolution). Calls are timed in batches of n calls, n chosen per method",
  "  (from the best of 3 warm-up calls; 1 for calls over 100 ms) so that a batch takes at least 10 ms, capped at 2000 calls",
  sprintf("  (%s); calls slower than 10 ms are timed one by one. The time of a call is batch time / n.",
          paste(sprintf("%s: %d", sizes$label, sizes$max_n), collapse = ", ")),
  "  A full `gc()` precedes every batch (outside the timed region); batches of the methods are interleaved.",
  "  Median, interquartile range (p25-p75) and min-max are over the repetitions (batches); the column",
  "  \"Reps x batch\" gives both counts.",
  "  Times include R's function call overhead (about 0.1-0.5 µs, which matters only for `x + 0` at 100 B).",
  "- Note: `saveRDS()` / `readRDS()` always use XDR (big-endian) serialization, which byte-swaps every",
  "  double on this little-endian machine; yaplr and the `serialize`/`unserialize` bound use native order.",
  "- Ratios are of medians measured in this run. \"faster\" = baseline time / yaplr time.",
  ""
)

md <- c(md, "## Results", "")
for (i in seq_len(nrow(sizes))) {
  id <- sizes$id[i]
  ss <- summ[summ$size == id, ]
  md <- c(md, sprintf("### %s (`runif(%s)`)", sizes$label[i], formatC(sizes$len[i], format = "d", big.mark = ",")), "",
          "| Method | Process | Median | IQR (p25-p75) | Min-max | Reps x batch |",
          "|---|---|---:|---:|---:|---:|")
  for (j in seq_len(nrow(ss))) {
    proc <- if (ss$method[j] %in% c("yaplr send", "saveRDS", "serialize", "x + 0")) "sender" else "receiver"
    md <- c(md, sprintf("| %s | %s | %s | %s - %s | %s - %s | %d x %d |", ss$method[j], proc,
                        fmt_time(ss$median[j]), fmt_time(ss$p25[j]), fmt_time(ss$p75[j]),
                        fmt_time(ss$min[j]), fmt_time(ss$max[j]), ss$reps[j], ss$batch[j]))
  }
  md <- c(md, "", "| Ratio | Definition | Value |", "|---|---|---:|")
  for (rr in ratio_rows(id)) {
    md <- c(md, sprintf("| %s | %s | %s |", rr[1], rr[2], fmt_ratio(as.numeric(rr[3]))))
  }
  md <- c(md, "")
}

md <- c(md, "## Goals", "", "| Goal | Measured | Status |", "|---|---|---|", g, "")
writeLines(md, out_md, useBytes = TRUE)

# results.png -------------------------------------------------------------

styles <- data.frame(
  method = c("yaplr send", "saveRDS", "serialize", "x + 0",
             "yaplr retrieve (zero-copy)", "yaplr retrieve (copy)", "readRDS", "unserialize"),
  col = c("#D62728", "#1F77B4", "#7F7F7F", "#000000", "#FF7F0E", "#9467BD", "#17BECF", "#8C564B"),
  lty = c(1, 1, 1, 1, 2, 2, 2, 2),
  pch = c(16, 15, 17, 18, 1, 0, 2, 5),
  stringsAsFactors = FALSE
)
styles <- styles[styles$method %in% method_names, ]

if (capabilities("cairo")) png(out_png, width = 1100, height = 750, res = 110, type = "cairo") else
  png(out_png, width = 1100, height = 750, res = 110)
par(mar = c(4.5, 6.5, 3, 1))
yr <- range(summ$median)
yr <- 10^c(floor(log10(yr[1])), ceiling(log10(yr[2])))
plot(NA, xlim = range(sizes$bytes), ylim = yr, log = "xy", axes = FALSE,
     xlab = "object size (bytes of doubles, runif)", ylab = "",
     main = sprintf("yaplr vs saveRDS/readRDS (files in /dev/shm) and in-process bounds; %s, %s cores",
                    format(Sys.Date()), nproc), cex.main = 0.95)
axis(1, at = sizes$bytes, labels = sizes$label)
yt <- 10^seq(log10(yr[1]), log10(yr[2]))
axis(2, at = yt, labels = fmt_time(yt), las = 1, cex.axis = 0.85)
mtext("median time per call (log scale)", side = 2, line = 5)
abline(h = yt, v = sizes$bytes, col = "grey90")
box()
for (j in seq_len(nrow(styles))) {
  y <- sapply(sizes$id, med, m = styles$method[j])
  lines(sizes$bytes, y, col = styles$col[j], lty = styles$lty[j], lwd = 2, type = "o",
        pch = styles$pch[j])
}
legend("topleft", legend = styles$method, col = styles$col, lty = styles$lty, pch = styles$pch,
       lwd = 2, bg = "white", cex = 0.85,
       title = "solid: sender process, dashed: receiver process")
invisible(dev.off())

# stdout ------------------------------------------------------------------

cat("\n")
cat(md[seq(which(md == "## Results"), length(md))], sep = "\n")
cat(sprintf("Wrote %s and %s (%.0f s)\n", out_md, out_png, wall))
