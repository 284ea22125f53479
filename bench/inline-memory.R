# Memory of a store of many small (inline) objects: the helper's resident
# memory and its journal against the bytes stored.
#
#   Rscript bench/inline-memory.R [n = 10000] [bytes = 62000]
#
# Sends n raw vectors of `bytes` bytes, overwrites half of them once,
# retrieves them all, and prints what the store takes.
suppressPackageStartupMessages(library(yaplr))
args <- as.numeric(commandArgs(TRUE))
n <- if (length(args) >= 1L) args[1L] else 10000
bytes <- if (length(args) >= 2L) args[2L] else 62000
dir <- tempfile("yaplr-mem-", tmpdir = "/dev/shm")
options(yaplr.dir = dir)
rss <- function(pid) {
  l <- grep("^VmRSS", readLines(sprintf("/proc/%d/status", pid)), value = TRUE)
  as.numeric(sub("VmRSS:\\s+([0-9]+) kB", "\\1", l)) * 1024
}
x <- lapply(seq_len(n), function(i) as.raw(sample(0:255, bytes, TRUE)))
t0 <- Sys.time()
for (i in seq_len(n)) send_object(x[[i]], paste0("t", i))
for (i in seq_len(n %/% 2)) send_object(x[[i + n %/% 2]], paste0("t", i))
sends <- as.numeric(Sys.time() - t0, units = "secs")
pid <- server_info()$pid
rss1 <- rss(pid)
stored <- sum(list_objects()$size)
journal <- file.size(file.path(dir, "catalog.journal"))
files <- sum(file.size(list.files(dir, pattern = "yobj$", full.names = TRUE)))
for (i in seq_len(n)) retrieve_object(paste0("t", i))
rss2 <- rss(pid)
cat(sprintf(paste0(
  "%d objects of %d bytes: stored %.0f MB; journal %.0f MB; object files %.0f MB; ",
  "helper RSS %.1f MB (%.1f MB after retrieving all); (journal + RSS) / stored = %.3f; ",
  "%d sends in %.1f s\n"),
  n, bytes, stored / 1e6, journal / 1e6, files / 1e6, rss1 / 1e6, rss2 / 1e6,
  (journal + max(rss1, rss2)) / stored, n + n %/% 2, sends))
invisible(quit_server())
