# Options of yaplr, all read through the helpers below.

#' Options that control yaplr
#'
#' @description
#' * `yaplr.dir`: the store directory. Default: the environment variable
#'   `YAPLR_DIR` if set, otherwise `/dev/shm/yaplr-<uid>` (in RAM). Sessions
#'   that use different directories never see each other's objects. Any
#'   directory works; on a disk the objects persist on disk.
#' * `yaplr.timeout`: how many seconds any call may wait (for the helper to
#'   start or to answer) before it fails with a `yaplr_timeout` error.
#'   Default 10. Every function also takes a `timeout` argument.
#' * `yaplr.namespace`: the namespace of objects when a function is not given
#'   one. Default `"default"`.
#' * `yaplr.automatic_server_start`: whether a call that finds no helper
#'   starts one. Default `TRUE`. With `FALSE`, such a call fails with a
#'   `yaplr_no_server` error until [make_sure_server_is_started()] is called.
#'
#' @name yaplr-options
#' @examples
#' getOption("yaplr.timeout", 10)
#' store_dir()
NULL

#' The store directory in use
#'
#' @return The absolute path of the store directory that yaplr functions in
#'   this session use (see [yaplr-options]).
#' @export
#' @examples
#' store_dir()
store_dir <- function() {
  dir <- getOption("yaplr.dir")
  if (is.null(dir)) {
    dir <- Sys.getenv("YAPLR_DIR", "")
  }
  # Every call resolves the store: remember the last answer.
  if (identical(dir, the$dir_in)) {
    return(the$dir_out)
  }
  out <- resolve_store_dir(dir)
  if (!nzchar(dir) || startsWith(dir, "/") || startsWith(dir, "~")) {
    the$dir_in <- dir
    the$dir_out <- out
  }
  out
}

resolve_store_dir <- function(dir) {
  if (!is.character(dir) || length(dir) != 1L || is.na(dir)) {
    abort_yaplr(
      "bad_argument",
      "options(yaplr.dir = ) must be a single directory path, not {describe(dir)}."
    )
  }
  if (!nzchar(dir)) {
    return(default_store_dir_())
  }
  dir <- path.expand(dir)
  if (!startsWith(dir, "/")) {
    dir <- file.path(normalizePath(".", mustWork = TRUE), dir)
  }
  sub("/+$", "", dir)
}

yaplr_namespace <- function() {
  getOption("yaplr.namespace", "default")
}

yaplr_timeout <- function() {
  getOption("yaplr.timeout", 10)
}

autostart_option <- function(automatic_server_start, call = caller_call()) {
  if (is.null(automatic_server_start)) {
    automatic_server_start <- getOption("yaplr.automatic_server_start", TRUE)
  }
  check_flag(automatic_server_start, "automatic_server_start", call = call)
  automatic_server_start
}

# The helper program, looked up once per session.
helper_path <- function() {
  path <- the$helper
  if (is.null(path)) {
    path <- system.file("bin", "yaplrd", package = "yaplr")
    the$helper <- path
  }
  path
}

the <- new.env(parent = emptyenv())
