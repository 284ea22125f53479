# Queues: push, pop (with or without a lease), acknowledge, length.

#' Queues between processes
#'
#' @description
#' * `queue_push()` appends `obj` to the queue `name` (created on first
#'   use).
#' * `queue_pop()` returns the oldest item, waiting up to `timeout` seconds
#'   for one (without polling: the helper hands the item over the moment
#'   it is pushed). Several processes may pop from one queue: each item goes
#'   to exactly one of them.
#' * `queue_ack()` completes an item popped with `ack = FALSE`.
#' * `queue_length()` returns how many items wait in the queue.
#'
#' With `ack = TRUE` (the default) an item is removed from the queue as it
#' is handed over. With `ack = FALSE` it is *leased* to the popping
#' process: `queue_pop()` returns a `yaplr_queue_item` (the item is in its
#' `$value`), and the item stays in the store until `queue_ack()` completes
#' it. If the popping process dies first (killed, crashed), the helper hands
#' the item back to the head of the queue, for another consumer, within
#' about 50 ms when one is waiting (at most 2 seconds otherwise): work a
#' crashed worker took is never lost, and each item is completed exactly
#' once. Leases are kept in the helper's journal, so they survive a restart
#' of the helper. An item whose reading is interrupted with Ctrl-C goes
#' back to the head of the queue.
#'
#' Items are stored like objects (small ones inline, large ones in files of
#' their own), count towards the store's capacity, and survive a restart of
#' the helper; they are not listed by [list_objects()] nor saved by
#' [save_objects()], and [remove_objects()] removes the queues of its
#' namespace with its objects.
#'
#' @param name The queue's name: a single non-empty string of at most 1024
#'   bytes.
#' @param obj The item to append: any object [serialize()] accepts.
#' @param ack `TRUE` (the default) removes the item as it is handed over;
#'   `FALSE` leases it until `queue_ack()` (see above).
#' @param item A `yaplr_queue_item` returned by `queue_pop(ack = FALSE)`.
#' @inheritParams objects
#' @param timeout The most seconds to wait. Default
#'   `getOption("yaplr.timeout", 10)`.
#' @return `queue_push()` and `queue_ack()`: `NULL`, invisibly.
#'   `queue_pop()`: the item, or with `ack = FALSE` a `yaplr_queue_item`
#'   (a list with the item in `value`, and the queue's `name`, `namespace`
#'   and `store`). A queue that stays empty gives a condition of class
#'   `yaplr_timeout`. `queue_length()`: the number of items waiting (not
#'   counting leased ones), with attribute `leased`, the number of items
#'   popped with `ack = FALSE` and not yet acknowledged.
#' @examples
#' old <- options(yaplr.dir = file.path(tempdir(), "yaplr-example"))
#' queue_push("jobs", list(job = 1))
#' queue_push("jobs", list(job = 2))
#' queue_length("jobs")
#' queue_pop("jobs")
#' item <- queue_pop("jobs", ack = FALSE)
#' item$value
#' queue_ack(item)
#' tryCatch(queue_pop("jobs", timeout = 0.2), yaplr_timeout = function(e) "empty")
#' quit_server()
#' options(old)
#' @name queues
NULL

#' @rdname queues
#' @export
queue_push <- function(name, obj, timeout = yaplr_timeout(), namespace = yaplr_namespace()) {
  if (missing(name)) abort_missing_name()
  if (missing(obj)) abort_yaplr("bad_argument", "`obj` is missing; give the item to append.")
  invisible(check_result(queue_push_(session(), name, obj, namespace, timeout,
                                     autostart_option(NULL), progress_delay())))
}

#' @rdname queues
#' @export
queue_pop <- function(name, timeout = yaplr_timeout(), ack = TRUE,
                      namespace = yaplr_namespace(), copy = FALSE) {
  if (missing(name)) abort_missing_name()
  res <- check_result(queue_pop_(session(), name, namespace, timeout, autostart_option(NULL),
                                 ack, copy, progress_delay()))[[1L]]
  if (isTRUE(ack)) {
    return(res)
  }
  structure(c(res, list(name = name, namespace = namespace, store = store_dir())),
            class = "yaplr_queue_item")
}

#' @rdname queues
#' @export
queue_ack <- function(item, timeout = yaplr_timeout()) {
  if (!inherits(item, "yaplr_queue_item")) {
    abort_yaplr("bad_argument", sprintf(
      "`item` must be a yaplr_queue_item returned by queue_pop(ack = FALSE), not %s.",
      describe(item)))
  }
  invisible(check_result(queue_ack_(session_of(item$store), item$name, item$namespace,
                                    item$seq, item$token, timeout, autostart_option(NULL))))
}

#' @rdname queues
#' @export
queue_length <- function(name, timeout = yaplr_timeout(), namespace = yaplr_namespace()) {
  if (missing(name)) abort_missing_name()
  n <- check_result(queue_length_(session(), name, namespace, timeout, autostart_option(NULL)))
  structure(n[[1L]], leased = n[[2L]])
}

#' @export
print.yaplr_queue_item <- function(x, ...) {
  cat(sprintf("<yaplr_queue_item %d of queue \"%s\"%s, not yet acknowledged>\n",
              as.integer(x$seq), x$name,
              if (identical(x$namespace, "default")) "" else sprintf(" (namespace \"%s\")",
                                                                      x$namespace)))
  cat("$value:\n")
  print(x$value, ...)
  invisible(x)
}
