# Locks between processes: robust mutexes in shared memory.

#' Locks between processes
#'
#' @description
#' * `acquire_lock()` acquires the lock `name`, waiting up to `timeout`
#'   seconds while another process holds it, and returns a lock handle.
#' * `release_lock()` releases it.
#' * `with_lock()` evaluates `expr` holding the lock, and releases it
#'   however `expr` ends: a value, an error or an interrupt.
#' * `lock_info()` tells whether the lock is held, by which process, and
#'   since when.
#'
#' Locks are robust, process-shared mutexes in shared memory of the store:
#' acquiring and releasing an uncontended lock takes microseconds
#' and never involves the helper (after the first use of a name); see
#' `make bench` for figures. A waiting
#' process sleeps in the kernel, not polling. If the process holding a lock
#' dies, even by `kill -9`, the operating system releases it at once and the
#' next waiter gets it; `acquire_lock()` then says so with the attribute
#' `previous_holder_died` of its handle (what the lock protects may have
#' been left half-updated).
#'
#' A lock belongs to the process (and thread) that acquired it: only that
#' process can release it. A child forked while the parent holds a lock
#' (say by [parallel::mclapply()]) does not hold it, and never releases its
#' parent's lock. A handle dropped while its lock is held releases it when R
#' collects it: at R's first garbage collection after the next
#' `acquire_lock()` or the end of the top-level call that dropped it. When R
#' exits, the locks it holds are released. A handle saved and restored, or
#' sent to another process, is inert. Acquiring a lock this process already holds is an error (locks
#' are not recursive). Lock names are separate from tags: a lock and an
#' object may share a name, and locks are not listed by [list_objects()].
#'
#' A store holds at most 65,536 counters and locks at once. When it is
#' full, the locks that nobody holds are forgotten to make room (a lock
#' that is not held holds nothing but its name; it is made again on its
#' next use); counters stay until [remove_object()] removes them.
#'
#' @param name The lock's name: a single non-empty string of at most 1024
#'   bytes.
#' @param timeout The most seconds to wait for the lock. `NULL` (the
#'   default): `getOption("yaplr.timeout", 10)`. When it runs out, a
#'   condition of class `yaplr_timeout` that names the holder's pid.
#' @param namespace The lock's namespace. `NULL` (the default):
#'   `getOption("yaplr.namespace", "default")`.
#' @param lock A handle returned by `acquire_lock()`.
#' @param expr The expression to evaluate holding the lock.
#' @return `acquire_lock()`: a `yaplr_lock` handle. `release_lock()`: `TRUE`
#'   invisibly, `FALSE` if the lock was released before. `with_lock()`: the
#'   value of `expr`. `lock_info()`: a list with `name`, `namespace`, `held`
#'   (`TRUE` or `FALSE`), `pid` (the holder's process id, or `NA`) and
#'   `since` (when it acquired the lock, a `POSIXct`, or `NA`).
#' @examples
#' old <- options(yaplr.dir = file.path(tempdir(), "yaplr-example"))
#' l <- acquire_lock("file-a")
#' lock_info("file-a")$held
#' release_lock(l)
#' send_object(0, "total")
#' if (.Platform$OS.type == "unix") {
#'   # Read-modify-write of one object by four workers, none lost.
#'   invisible(parallel::mclapply(1:4, function(i) {
#'     for (k in 1:25) with_lock("total", send_object(retrieve_object("total") + 1, "total"))
#'   }, mc.cores = 2))
#' }
#' retrieve_object("total")
#' quit_server()
#' options(old)
#' @name locks
NULL

#' @rdname locks
#' @export
acquire_lock <- function(name, timeout = NULL, namespace = NULL) {
  if (missing(name)) abort_missing_name()
  res <- .Call(yaplr_acquire_lock, name, namespace, timeout)
  if (is.list(res)) check_result(res) else res
}

#' @rdname locks
#' @export
release_lock <- function(lock) {
  res <- .Call(yaplr_release_lock, lock)
  if (is.logical(res)) {
    return(invisible(res))
  }
  if (!inherits(lock, "yaplr_lock")) {
    abort_yaplr("bad_argument", sprintf(
      "`lock` must be a yaplr_lock returned by acquire_lock(), not %s.", describe(lock)))
  }
  check_result(res)
}

#' @rdname locks
#' @export
with_lock <- function(name, expr, timeout = NULL, namespace = NULL) {
  if (missing(name)) abort_missing_name()
  lock <- acquire_lock(name, timeout = timeout, namespace = namespace)
  on.exit(release_lock(lock), add = TRUE)
  expr
}

#' @rdname locks
#' @export
lock_info <- function(name, namespace = NULL, timeout = NULL) {
  if (missing(name)) abort_missing_name()
  check_result(lock_info_(NULL, name, namespace, timeout))
}

#' @export
print.yaplr_lock <- function(x, ...) {
  f <- .Call(yaplr_lock_fields, x)
  if (is.null(f)) {
    cat("<yaplr_lock, no longer attached>\n")
  } else if (f$released) {
    cat("<yaplr_lock, released>\n")
  } else {
    cat(sprintf("<yaplr_lock \"%s\"%s acquired by process %d%s>\n", f$name,
                if (identical(f$namespace, "default")) "" else sprintf(" (namespace \"%s\")", f$namespace),
                as.integer(f$pid),
                if (isTRUE(attr(x, "previous_holder_died"))) " (its previous holder died)" else ""))
  }
  invisible(x)
}
