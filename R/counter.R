# Counters: integers in shared memory, changed atomically without the
# helper.

#' Shared counters
#'
#' @description
#' * `counter_add()` adds `by` to the counter `name` and returns the new
#'   value, in one atomic step: of processes adding at once, no increment is
#'   ever lost.
#' * `counter_get()` returns its value (0 for a counter never set).
#' * `counter_set()` sets it.
#' * `counter_cas()` sets it to `new` only if its value is `old` (a counter
#'   never set is 0), and says whether it did: a compare-and-swap.
#'
#' Counters live in shared memory of the store: after the first call for a
#' name (which asks the helper to make it), a call changes the counter
#' without talking to the helper, in a few microseconds (see `make bench`). Values are whole
#' numbers from -2^53 to 2^53, returned as doubles, which hold every such
#' integer exactly; a change that would go beyond is an error and leaves the
#' value as it was.
#'
#' A counter is listed by [list_objects()] (class `"yaplr_counter"`), read
#' by [retrieve_object()] and [does_object_exist()], and removed by
#' [remove_object()] or [remove_objects()]. It takes its tag: an object
#' can not be sent under the name of a counter, nor a counter made under
#' the tag of an object. Counters survive a restart of the helper;
#' [quit_server()] removes them with the store. A store holds at most
#' 65,536 counters and locks; beyond, making a counter fails with
#' `yaplr_no_space` (remove some).
#'
#' @param name The counter's name: a single non-empty string of at most
#'   1024 bytes (a tag of the store).
#' @param by The amount to add, a whole number (default 1; negative
#'   subtracts).
#' @param value,old,new Whole numbers from -2^53 to 2^53.
#' @param timeout The most seconds to wait for the helper (first use) or for
#'   another process changing the counter. `NULL` (the default):
#'   `getOption("yaplr.timeout", 10)`.
#' @param namespace The counter's namespace. `NULL` (the default):
#'   `getOption("yaplr.namespace", "default")`.
#' @return `counter_add()` and `counter_get()`: the value, a double.
#'   `counter_set()`: `value`, invisibly. `counter_cas()`: `TRUE` if it set
#'   the counter, else `FALSE`.
#' @seealso [with_lock()] for changes of several values at once.
#' @examples
#' old <- options(yaplr.dir = file.path(tempdir(), "yaplr-example"))
#' counter_add("visits")
#' counter_add("visits", 10)
#' counter_get("visits")
#' counter_cas("visits", 11, 0)
#' counter_get("visits")
#' if (.Platform$OS.type == "unix") {
#'   # Four forked workers, 1000 increments each: none is lost.
#'   invisible(parallel::mclapply(1:4, function(i) for (k in 1:1000) counter_add("n"),
#'                                mc.cores = 2))
#'   counter_get("n")
#' }
#' remove_object("visits")
#' quit_server()
#' options(old)
#' @name counters
NULL

#' @rdname counters
#' @export
counter_add <- function(name, by = 1, namespace = NULL, timeout = NULL) {
  if (missing(name)) abort_missing_name()
  res <- .Call(yaplr_counter_add, name, by, namespace, timeout)
  if (is.object(res)) check_result(res) else res
}

#' @rdname counters
#' @export
counter_get <- function(name, namespace = NULL, timeout = NULL) {
  if (missing(name)) abort_missing_name()
  res <- .Call(yaplr_counter_get, name, namespace, timeout)
  if (is.object(res)) check_result(res) else res
}

#' @rdname counters
#' @export
counter_set <- function(name, value, namespace = NULL, timeout = NULL) {
  if (missing(name)) abort_missing_name()
  if (missing(value)) abort_yaplr("bad_argument", "`value` is missing; give the new value.")
  res <- .Call(yaplr_counter_set, name, value, namespace, timeout)
  invisible(if (is.object(res)) check_result(res) else res)
}

#' @rdname counters
#' @export
counter_cas <- function(name, old, new, namespace = NULL, timeout = NULL) {
  if (missing(name)) abort_missing_name()
  if (missing(old) || missing(new)) {
    abort_yaplr("bad_argument", "`old` and `new` are both needed.")
  }
  res <- .Call(yaplr_counter_cas, name, old, new, namespace, timeout)
  if (is.object(res)) check_result(res) else res
}
