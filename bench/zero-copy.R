# Where does a zero-copy view pay off? Times retrieve_object() of one
# stored double vector as a view (copy = FALSE) and as a copy (copy = TRUE),
# alone and followed by sum() (which reads every element, so the view's page
# faults are counted too), at sizes from 64 KiB to 16 MiB.
#
#   Rscript bench/zero-copy.R        (with the package installed)
#
# Prints a markdown table of medians (microseconds per call) and writes it to
# bench/zero-copy.md. The store is a private directory under /dev/shm,
# stopped and removed at the end.
#
# Below the zero-copy threshold (MIN_ZERO_COPY_BYTES in
# src/rust/r/src/vector.rs, 256 KiB) "view" is a copy too (column
# `zero_copy`): the threshold was chosen from a run with it lowered to
# 64 KiB, which bench/zero-copy.md records.

suppressPackageStartupMessages(library(yaplr))

script_dir <- local({
  arg <- grep("^--file=", commandArgs(FALSE), value = TRUE)
  if (length(arg)) dirname(normalizePath(sub("^--file=", "", arg[1]))) else normalizePath("bench")
})
source(file.path(script_dir, "harness.R"))

store <- tempfile("yaplr-bench-zc-", tmpdir = "/dev/shm")
options(yaplr.dir = store, yaplr.timeout = 60)
make_sure_server_is_started(quiet = TRUE)

kib <- c(64, 128, 192, 256, 384, 512, 1024, 2048, 4096, 8192, 16384)
reps <- as.integer(Sys.getenv("YAPLR_BENCH_REPS", "31"))
rows <- list()
for (s in kib) {
  tag <- sprintf("zc-%d", s)
  x <- make_object(s * 1024 / 8, s)
  send_object(x, tag)
  stopifnot(identical(retrieve_object(tag), x),
            identical(retrieve_object(tag, copy = TRUE), x))
  zc <- yaplr:::is_shared_view_(retrieve_object(tag))
  methods <- list(
    list(name = "view", before = function(n) NULL,
         run = function(k) retrieve_object(tag)),
    list(name = "copy", before = function(n) NULL,
         run = function(k) retrieve_object(tag, copy = TRUE)),
    list(name = "view + sum", before = function(n) NULL,
         run = function(k) sum(retrieve_object(tag))),
    list(name = "copy + sum", before = function(n) NULL,
         run = function(k) sum(retrieve_object(tag, copy = TRUE)))
  )
  res <- measure(methods, reps, max_n = 500L)
  med <- apply(res$times, 2, stats::median) * 1e6
  rows[[length(rows) + 1L]] <- data.frame(
    size = if (s < 1024) sprintf("%d KiB", s) else sprintf("%d MiB", s / 1024),
    zero_copy = zc,
    t(round(med, 1)), check.names = FALSE
  )
  remove_object(tag)
  cat(".")
}
cat("\n")
quit_server()
tab <- do.call(rbind, rows)
md <- c(
  sprintf("Retrieve of one double vector, median microseconds per call (%d repetitions;", reps),
  sprintf("%s, %d cores, load %s).", format(Sys.Date()), parallel::detectCores(),
          paste(strsplit(readLines("/proc/loadavg"), " ")[[1]][1:3], collapse = ", ")),
  "`zero_copy`: whether `retrieve_object()` returned a view at that size.",
  "",
  paste0("| ", paste(names(tab), collapse = " | "), " |"),
  paste0("|", paste(rep("---:", ncol(tab)), collapse = "|"), "|"),
  apply(tab, 1, function(r) paste0("| ", paste(trimws(r), collapse = " | "), " |"))
)
writeLines(md)
writeLines(md, file.path(script_dir, "zero-copy.md"))
