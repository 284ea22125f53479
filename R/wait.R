# Waiting for objects: wait_object() and take_object().

#' Wait for an object, or take it
#'
#' @description
#' * `wait_object()` returns the object stored under `tag` as soon as there
#'   is one, waiting up to `timeout` seconds for it to be sent. With
#'   `after_version`, it waits for a value newer than that version: "the
#'   next value" (EMS's `readFF`).
#' * `take_object()` waits the same way, then returns the object and
#'   removes it in one atomic step: of several sessions taking the same tag,
#'   exactly one gets each value (EMS's `readFE`; with
#'   `send_object(if_absent = TRUE)` a tag is a one-slot mailbox).
#'
#' Waiting does not poll: the helper answers the moment the object is
#' sent. A wait ends with a condition of class `yaplr_timeout` when the time
#' runs out, and Ctrl-C stops it (a take that is interrupted takes nothing).
#' If the helper is restarted during a wait, the wait goes on with the new
#' helper until the same deadline.
#'
#' Versions: every value stored in a store gets a larger version than any
#' before it. `send_object()` returns the version of the value it stored
#' (invisibly), `object_info()` gives it, and `wait_object(with_version =
#' TRUE)` and `retrieve_object(with_version = TRUE)` return it with the
#' value. Use it with `after_version` to follow a tag's values, or with
#' `send_object(if_version = )` to replace a value only if nobody replaced
#' it since you read it.
#'
#' @inheritParams objects
#' @param timeout The most seconds to wait. `NULL` (the default):
#'   `getOption("yaplr.timeout", 10)`.
#' @param after_version `NULL` (the default: any value), or a version: wait
#'   for a value with a larger version.
#' @param with_version `FALSE` (the default) returns the object; `TRUE`
#'   returns `list(value = , version = )`.
#' @return The object (see `with_version`).
#' @seealso [send_object()] for `if_absent` and `if_version`.
#' @examples
#' old <- options(yaplr.dir = file.path(tempdir(), "yaplr-example"))
#' send_object("hello", "greeting")
#' wait_object("greeting")
#' v <- object_info("greeting")$version
#' # No newer value comes: a classed timeout.
#' tryCatch(wait_object("greeting", timeout = 0.2, after_version = v),
#'          yaplr_timeout = function(e) "no new greeting")
#' take_object("greeting")
#' does_object_exist("greeting")
#' quit_server()
#' options(old)
#' @export
wait_object <- function(tag, timeout = NULL, after_version = NULL, namespace = NULL,
                        copy = FALSE, with_version = FALSE, automatic_server_start = NULL) {
  if (missing(tag)) abort_missing_tag()
  res <- .Call(wrap__wait_object_, NULL, tag, namespace, timeout, automatic_server_start, copy,
               NULL, after_version, with_version)
  if (is.object(res)) check_result(res) else res[[1L]]
}

#' @rdname wait_object
#' @export
take_object <- function(tag, timeout = NULL, namespace = NULL, copy = FALSE,
                        automatic_server_start = NULL) {
  if (missing(tag)) abort_missing_tag()
  res <- .Call(wrap__take_object_, NULL, tag, namespace, timeout, automatic_server_start, copy,
               NULL)
  if (is.object(res)) check_result(res) else res[[1L]]
}
