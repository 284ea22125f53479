# Writers overwrite shared tags (small values inline, large ones in files)
# while the helper is killed every 0.5 s; counts the sends that failed.
#
#   Rscript tools/kill-storm.R [seconds = 30] [writers = 4]
suppressPackageStartupMessages(library(yaplr))
args <- as.numeric(commandArgs(TRUE))
secs <- if (length(args) >= 1L) args[1L] else 30
n_writers <- if (length(args) >= 2L) args[2L] else 4
dir <- tempfile("yaplr-storm-", tmpdir = "/dev/shm")
options(yaplr.dir = dir)
make_sure_server_is_started(quiet = TRUE)
ctl <- tempfile()
dir.create(ctl)
writer <- function(dir, w, ctl) {
  options(yaplr.dir = dir, yaplr.timeout = 10)
  tags <- sprintf("shared%d", 1:4)
  writeLines("ready", file.path(ctl, paste0("ready-", w)))
  while (!file.exists(file.path(ctl, "go"))) Sys.sleep(0.005)
  errors <- character()
  i <- 0L
  while (!file.exists(file.path(ctl, "stop"))) {
    i <- i + 1L
    value <- if (i %% 2L == 0L) c(w, i) else c(w, i, numeric(2e4))
    res <- tryCatch({
      yaplr::send_object(value, tags[(i + w) %% 4L + 1L])
      NULL
    }, yaplr_error = function(e) paste(class(e)[1L], conditionMessage(e)))
    if (!is.null(res)) errors <- c(errors, res)
  }
  list(calls = i, errors = errors)
}
procs <- lapply(seq_len(n_writers), function(w) callr::r_bg(writer, list(dir = dir, w = w, ctl = ctl)))
while (!all(file.exists(file.path(ctl, paste0("ready-", seq_len(n_writers)))))) Sys.sleep(0.01)
invisible(file.create(file.path(ctl, "go")))
t0 <- Sys.time()
kills <- 0L
while (as.numeric(Sys.time() - t0, units = "secs") < secs) {
  Sys.sleep(0.5)
  pid <- suppressWarnings(as.integer(readLines(file.path(dir, "yaplrd.lock"), warn = FALSE)[1L]))
  if (is.na(pid) || !file.exists(sprintf("/proc/%d", pid))) next
  tools::pskill(pid, tools::SIGKILL)
  kills <- kills + 1L
}
invisible(file.create(file.path(ctl, "stop")))
for (p in procs) p$wait(30000)
res <- lapply(procs, function(p) p$get_result())
errs <- unlist(lapply(res, `[[`, "errors"))
cat(sprintf("%d writers, %.0f s: %d helper kills, %d sends, %d failed\n", n_writers, secs, kills,
            sum(vapply(res, `[[`, integer(1), "calls")), length(errs)))
if (length(errs)) print(table(sub(" .*", "", errs)))
quit_server()
unlink(ctl, recursive = TRUE)
