# The yaplrd helper: starting, checking and stopping it.

#' The yaplrd helper process
#'
#' @description
#' One helper process, `yaplrd`, serves each store directory. It is started
#' automatically by the first call that needs it, runs detached from the R
#' session that started it (so objects outlive that session), and keeps the
#' catalogue of tags. Its log is `yaplrd.log` in the store directory.
#'
#' * `make_sure_server_is_started()` starts the helper if none runs.
#' * `is_server_running()` tells whether a helper holds the store, without
#'   contacting it.
#' * `ping_server()` checks that the helper answers.
#' * `server_info()` describes the running helper.
#' * `quit_server()` (and its alias `make_sure_server_is_down()`) stops the
#'   helper: it removes every stored object, its socket, lock files and log,
#'   and exits; the call returns once the process is gone. With
#'   `keep = TRUE` the objects stay for the next helper.
#'
#' If the helper is killed, the next call starts a new one, which finds
#' every object that was stored before.
#'
#' @param server_type,quiet `server_type` is accepted for compatibility with
#'   yaplr 0.1 and ignored. `quiet = FALSE` (the default) lets
#'   `make_sure_server_is_started()` report a start with a message and
#'   `ping_server()` warn when no helper runs.
#' @param timeout The most seconds to wait. Default
#'   `getOption("yaplr.timeout", 10)`.
#' @param keep For `quit_server()`: `FALSE` (the default) removes every
#'   object; `TRUE` stops the helper but keeps the objects and its journal,
#'   so the next helper (started by the next call, in any session, or after
#'   a reboot for a store on a disk) serves them again. A store on a disk
#'   (see [yaplr-options]) syncs every object and catalog change to the disk,
#'   so it also survives a crash of the machine; a store in `/dev/shm` lives
#'   in RAM and does not survive a reboot.
#' @return `make_sure_server_is_started()`: invisibly, `TRUE` if it started
#'   a helper, `FALSE` if one was running. `quit_server()` and
#'   `make_sure_server_is_down()`: invisibly, `TRUE` if a helper was stopped,
#'   `FALSE` if none ran. `is_server_running()` and `ping_server()`: `TRUE`
#'   or `FALSE` (`ping_server()` fails with `yaplr_timeout` when a helper
#'   runs but does not answer in time). `server_info()`: a list with `pid`,
#'   `dir`, `objects` (number stored), `bytes` (payload bytes stored),
#'   `started` (`POSIXct`) and `version`.
#' @name server
#' @examples
#' old <- options(yaplr.dir = file.path(tempdir(), "yaplr-example"))
#' is_server_running()
#' make_sure_server_is_started()
#' ping_server()
#' server_info()
#' quit_server()
#' is_server_running()
#' options(old)
NULL

#' @rdname server
#' @export
make_sure_server_is_started <- function(server_type = NULL, quiet = FALSE,
                                        timeout = yaplr_timeout()) {
  timeout <- check_timeout(timeout)
  check_flag(quiet, "quiet")
  dir <- store_dir()
  res <- check_result(start_server_(dir, helper_path(), timeout))
  if (res$started && !quiet) {
    message("Started the yaplr helper (pid ", res$pid, ") for the store ", dir, ".")
  }
  invisible(res$started)
}

#' @rdname server
#' @export
is_server_running <- function() {
  check_result(is_server_running_(store_dir()))
}

#' @rdname server
#' @export
ping_server <- function(quiet = FALSE, timeout = yaplr_timeout()) {
  timeout <- check_timeout(timeout)
  check_flag(quiet, "quiet")
  ok <- check_result(ping_server_(store_dir(), timeout))
  if (!ok && !quiet) {
    warning("No yaplr helper is running for the store ", store_dir(), ".", call. = FALSE)
  }
  ok
}

#' @rdname server
#' @export
server_info <- function(timeout = yaplr_timeout()) {
  timeout <- check_timeout(timeout)
  res <- check_result(server_info_(store_dir(), helper_path(), timeout, FALSE))
  res$started <- .POSIXct(res$started)
  structure(res, class = "yaplr_server_info")
}

#' @export
print.yaplr_server_info <- function(x, ...) {
  cat("<yaplr helper>\n")
  cat("  pid:     ", x$pid, "\n", sep = "")
  cat("  store:   ", x$dir, "\n", sep = "")
  cat("  objects: ", format(x$objects, big.mark = ","), " (",
      format(x$bytes, big.mark = ","), " bytes)\n", sep = "")
  cat("  started: ", format(x$started), "\n", sep = "")
  cat("  version: ", x$version, "\n", sep = "")
  invisible(x)
}

#' @rdname server
#' @export
quit_server <- function(timeout = yaplr_timeout(), keep = FALSE) {
  timeout <- check_timeout(timeout)
  check_flag(keep, "keep")
  invisible(check_result(quit_server_(store_dir(), timeout, keep)))
}

#' @rdname server
#' @export
make_sure_server_is_down <- function(timeout = yaplr_timeout(), keep = FALSE) {
  timeout <- check_timeout(timeout)
  check_flag(keep, "keep")
  invisible(check_result(quit_server_(store_dir(), timeout, keep)))
}
