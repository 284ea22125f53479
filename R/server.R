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
#' * `resize_store()` changes the store's capacity.
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
#' @param capacity For `make_sure_server_is_started()` and `resize_store()`:
#'   the most bytes the store's objects may use in all, as a number of bytes
#'   or a string such as `"2 GB"` or `"512 MiB"`; `NULL` (the default of
#'   `make_sure_server_is_started()`) leaves it as it is, and for
#'   `resize_store()` means no limit but the filesystem's. A helper started
#'   by any call takes `getOption("yaplr.capacity")` when set. A send that
#'   would exceed the capacity fails with `yaplr_no_space`, saying how much
#'   is needed and free; nothing is ever evicted. `resize_store()` grows or
#'   shrinks the capacity and refuses to go below what is used.
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
#'   `dir`, `objects` (number stored), `bytes` and `used` (payload bytes
#'   stored), `capacity` (`NA` when unlimited), `free` (bytes left under the
#'   capacity, or free on the filesystem),
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
                                        timeout = yaplr_timeout(),
                                        capacity = NULL) {
  res <- check_result(start_server_(session(), timeout, quiet, size_arg(capacity, "capacity")))
  if (res$started && !quiet) {
    message("Started the yaplr helper (pid ", res$pid, ") for the store ", store_dir(), ".")
  }
  invisible(res$started)
}

#' @rdname server
#' @export
is_server_running <- function() {
  check_result(is_server_running_(session()))
}

#' @rdname server
#' @export
ping_server <- function(quiet = FALSE, timeout = yaplr_timeout()) {
  ok <- check_result(ping_server_(session(), timeout, quiet))
  if (!ok && !quiet) {
    warning("No yaplr helper is running for the store ", store_dir(), ".", call. = FALSE)
  }
  ok
}

#' @rdname server
#' @export
server_info <- function(timeout = yaplr_timeout()) {
  check_result(server_info_(session(), timeout))
}

#' @export
print.yaplr_server_info <- function(x, ...) {
  cat("<yaplr helper>\n")
  cat("  pid:     ", x$pid, "\n", sep = "")
  cat("  store:   ", x$dir, "\n", sep = "")
  cat("  objects: ", format(x$objects, big.mark = ","), " (",
      format(x$bytes, big.mark = ","), " bytes)\n", sep = "")
  cap <- if (is.na(x$capacity)) "unlimited" else paste(format(x$capacity, big.mark = ","), "bytes")
  cat("  capacity:", cap, "\n")
  cat("  free:    ", format(x$free, big.mark = ","), " bytes\n", sep = "")
  cat("  started: ", format(x$started), "\n", sep = "")
  cat("  version: ", x$version, "\n", sep = "")
  invisible(x)
}

#' @rdname server
#' @export
resize_store <- function(capacity, timeout = yaplr_timeout()) {
  check_required("capacity", "the new capacity, such as \"2 GB\", or NULL for no limit")
  check_result(resize_store_(session(), size_arg(capacity, "capacity"), timeout,
                             autostart_option(NULL)))
  invisible(server_info(timeout = timeout))
}

#' @rdname server
#' @export
quit_server <- function(timeout = yaplr_timeout(), keep = FALSE) {
  invisible(check_result(quit_server_(session(), timeout, keep)))
}

#' @rdname server
#' @export
make_sure_server_is_down <- function(timeout = yaplr_timeout(), keep = FALSE) {
  invisible(check_result(quit_server_(session(), timeout, keep)))
}
