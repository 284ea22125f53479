#!/usr/bin/env Rscript
# The long soak: four R sessions do a random mix of send / overwrite /
# retrieve / remove / list on 50 shared tags for a while, with values that
# carry their own checksum; then the helper is stopped and the store must be
# empty. Uses the installed yaplr. The logic is run_soak() in
# tests/testthat/helper-soak.R, shared with tests/testthat/test-soak.R.
#
# The sessions also count, lock, and push to and pop from a queue; with a
# second argument, the helper is killed (SIGKILL) that often.
#
#   Rscript tools/soak.R [seconds [kill every seconds]]
#   (default 120 s, no kills; `make soak`: 120 s, a kill every 5 s)

args <- commandArgs(trailingOnly = TRUE)
duration <- if (length(args) >= 1L) suppressWarnings(as.numeric(args[[1L]])) else 120
kill_every <- if (length(args) >= 2L) suppressWarnings(as.numeric(args[[2L]])) else 0
if (length(duration) != 1L || is.na(duration) || duration <= 0 || is.na(kill_every)) {
  stop("usage: Rscript tools/soak.R [seconds [kill every seconds]]")
}

script <- sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE))
root <- if (length(script) == 1L) normalizePath(file.path(dirname(script), "..")) else getwd()
source(file.path(root, "tests", "testthat", "helper-soak.R"))

library(yaplr)
base <- if (dir.exists("/dev/shm")) "/dev/shm" else tempdir()
dir <- tempfile("yaplr-soak-", tmpdir = base)
cat("yaplr ", format(utils::packageVersion("yaplr")), " from ", find.package("yaplr"), "\n", sep = "")
cat("store: ", dir, "\n", sep = "")
cat("soaking for ", duration, " s",
    if (kill_every > 0) paste0(", killing the helper every ", kill_every, " s"), " ...\n", sep = "")

res <- run_soak(dir, duration = duration, processes = 4L, n_tags = 50L, kill_every = kill_every)
unlink(dir, recursive = TRUE)
writeLines(format_soak(res))
ok <- soak_passed(res)
cat(if (ok) "soak: PASSED\n" else "soak: FAILED\n")
quit(status = if (ok) 0L else 1L)
