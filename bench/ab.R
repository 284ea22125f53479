# Compare two builds of yaplr, installed in two libraries, on one size:
# one process sends, then another retrieves (zero-copy view and copy); the
# median per call (µs) of `reps` timed batches. Run the builds in turn, a few
# rounds each, so that both see the same machine:
#
#   for r in 1 2 3; do for lib in /lib/a /lib/b; do
#     d=/dev/shm/ab-$r-$(basename $lib)
#     Rscript bench/ab.R $lib 125000 7 send $d; Rscript bench/ab.R $lib 125000 7 get $d
#     Rscript -e "library(yaplr, lib.loc = '$lib'); options(yaplr.dir = '$d'); quit_server()"
#   done; done
#
# Arguments: library, number of doubles, reps, "send" or "get", store dir.
args <- commandArgs(TRUE)
lib <- args[1]
n <- as.numeric(args[2])
reps <- as.integer(args[3])
role <- args[4]
library(yaplr, lib.loc = lib)
options(yaplr.dir = args[5])
x <- runif(n)
med <- function(f, k) {
  t <- numeric(reps)
  for (r in seq_len(reps)) {
    gc()
    s <- Sys.time()
    for (i in seq_len(k)) f(i)
    t[r] <- as.numeric(Sys.time() - s, units = "secs") / k
  }
  median(t)
}
k <- max(1L, as.integer(2e6 / n))
tag <- function(i) paste0("t", i %% 4)
if (role == "send") {
  cat(sprintf("send %.1f\n", 1e6 * med(function(i) send_object(x, tag(i)), k)))
} else {
  for (i in 0:3) if (!does_object_exist(tag(i))) send_object(x, tag(i))
  cat(sprintf("view %.1f\n", 1e6 * med(function(i) retrieve_object(tag(i)), k)))
  cat(sprintf("copy %.1f\n", 1e6 * med(function(i) retrieve_object(tag(i), copy = TRUE),
                                        max(1L, k %/% 4))))
}
