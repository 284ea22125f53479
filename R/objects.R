# Sending, retrieving, listing and removing objects.

#' Share objects between R sessions
#'
#' @description
#' * `send_object()` stores `obj` under `tag`, replacing any object stored
#'   under that tag before. The replacement is atomic: another session
#'   retrieves either the old or the new value, never a mix.
#' * `retrieve_object()` returns the object stored under `tag`, identical to
#'   what was sent.
#' * `does_object_exist()` tells whether an object is stored under `tag`.
#' * `remove_object()` removes the object stored under `tag`.
#' * `list_objects()` lists the stored objects.
#' * `remove_objects()` removes every object of a namespace.
#' * `object_info()` describes one object without retrieving it.
#'
#' Every object lives in a *namespace* (default `"default"`, or
#' `getOption("yaplr.namespace")`): the same tag in two namespaces names two
#' objects, so separate applications or pipelines sharing one store do not
#' collide.
#'
#' The first call of a session starts the `yaplrd` helper if none runs for
#' the store (see [make_sure_server_is_started()]). Objects stay in the
#' store after the sending session exits, until they are removed or the
#' helper is stopped with [quit_server()].
#'
#' Reading needs no helper: `retrieve_object()`, `does_object_exist()`,
#' `object_info()` and `list_objects()` look the tag up in the store's
#' index, a file of the store that every session maps, without a lock and
#' without a round trip (a few microseconds). They go on working while the
#' helper is paused or hung, or after it died, from the index as it left it
#' (after [quit_server()] they ask a new helper).
#' `list_objects()` does not stop changes while it runs: an object sent or
#' removed meanwhile may or may not be listed. Sends and removes go through
#' the helper, which updates the index before it answers, so a session
#' always reads its own changes.
#'
#' Any object that [serialize()] accepts can be sent. It is written with R
#' serialization (format version 3, native byte order) directly into a file
#' of the store, and read back directly from a mapping of that file.
#'
#' Ctrl-C stops a long send or retrieve within a few MB: a send then stores
#' nothing (the tag keeps any earlier value) and signals a condition of
#' class `"interrupt"` (see [yaplr-conditions]). In an interactive session,
#' a transfer that runs longer than about 2 seconds shows a progress bar
#' (see `yaplr.progress` in [yaplr-options]).
#'
#' @section Zero-copy vectors:
#' Plain atomic vectors (double, integer, logical, raw and complex, with
#' any attributes such as names, dim or a class, but not S4 objects) of
#' 64 KiB or more are stored as their raw elements. `retrieve_object()`
#' returns those of 256 KiB or more (elements and attributes as stored) as
#' a *view* of the read-only shared memory of the stored object instead of
#' a copy, which takes the same time whatever the size; smaller ones are
#' copied, which costs no more than a view at those sizes
#' (`bench/zero-copy.R` in the sources measures both). `object_info()`
#' tells which (`zero_copy`).
#' A view behaves like an ordinary vector for every R operation. The first
#' time R asks to modify it, it makes a private copy of the elements (as R
#' does for any shared value) and lets the shared memory go. A view stays
#' valid after the object is removed or replaced, or the helper stops.
#'
#' Memory: the shared memory of a removed or replaced object is returned to
#' the system once no view of it remains, that is when R garbage-collects
#' the last view (see [gc()]) or the view makes its private copy. Use
#' `copy = TRUE` to get an ordinary vector at once.
#'
#' Limit: every live view is one memory mapping of the R process, and Linux
#' allows a process `vm.max_map_count` mappings in all (65530 by default;
#' see `sysctl vm.max_map_count`), which R itself also needs for its large
#' vectors. A session holding tens of thousands of views at once (say a
#' list of 60,000 retrieved vectors) exhausts them, and then R's own
#' allocations fail. Retrieve such collections with `copy = TRUE`, keep
#' them as one object (a list or a matrix is stored and read as one), or
#' raise the limit (as root: `sysctl -w vm.max_map_count=262144`).
#'
#' @param obj The object to store.
#' @param tag The name of the object: a single non-empty string of at most
#'   1024 bytes. Any characters are allowed; the tag is never used as a file
#'   name.
#' @param automatic_server_start Whether to start the helper when none
#'   runs. `NULL` (the default) uses `getOption("yaplr.automatic_server_start",
#'   TRUE)`.
#' @param check_server_with_ping Accepted for compatibility with yaplr 0.1
#'   and ignored: every call checks the helper anyway.
#' @param force_unserialize_on_server Accepted for compatibility with yaplr
#'   0.1 and ignored.
#' @param timeout The most seconds the call may wait for the helper to start
#'   or answer. Default `getOption("yaplr.timeout", 10)`, which `NULL` also
#'   means.
#' @param namespace The namespace of the object: a single non-empty string
#'   of at most 256 bytes. Default `getOption("yaplr.namespace", "default")`,
#'   which `NULL` also means for the functions of one tag. For
#'   `list_objects()`, `NULL` lists the objects of every namespace.
#' @param description For `send_object()`: `NULL` (the default) or a single
#'   string describing the object, shown by `list_objects()` and
#'   `object_info()`.
#' @param if_absent For `send_object()`: `TRUE` stores the object only if
#'   no object is stored under `tag`; otherwise the call fails with a
#'   condition of class `yaplr_conflict` and stores nothing. Default `FALSE`.
#' @param if_version For `send_object()`: `NULL` (the default), or a version
#'   (as returned by `send_object()` or given by `object_info()`): store the
#'   object only if the value stored under `tag` has that version, else fail
#'   with `yaplr_conflict` and store nothing. This is a compare-and-swap on
#'   a whole object: read a value with `retrieve_object(with_version =
#'   TRUE)`, compute a new one, and send it with `if_version` so that a
#'   change made meanwhile by another session is never overwritten (retry
#'   on `yaplr_conflict`). See also [wait_object()].
#' @param with_version For `retrieve_object()`: `FALSE` (the default)
#'   returns the object; `TRUE` returns `list(value = , version = )`, the
#'   object and the version of the value read.
#' @param copy For `retrieve_object()`: `FALSE` (the default) returns
#'   plain vectors of 256 KiB or more as zero-copy views of shared memory
#'   (see below); `TRUE` always returns an ordinary copy.
#' @return `send_object()` returns the version of the stored value
#'   invisibly (see `if_version`); `remove_object()` returns `NULL` invisibly;
#'   `retrieve_object()` the object; `does_object_exist()` `TRUE` or
#'   `FALSE`; `list_objects()` a data frame with one row per object, row
#'   names the tags (sorted), and columns `size` (bytes stored) and `ctime`
#'   (when it was sent, a `POSIXct`), then `class` (its first class) and
#'   `description` (`NA` when none was given); with `namespace = NULL`, it has plain
#'   row names and two more columns, `namespace` and `tag`, sorted by both.
#'   `remove_objects()` returns the number of objects removed, invisibly.
#'   `object_info()` returns a list: `tag`, `namespace`, `size` (bytes
#'   stored), `ctime`, `class`, `type` (as [typeof()]), `length`, `dim`
#'   (`NULL` if none), `description` (`NULL` if none), `zero_copy` (whether
#'   [retrieve_object()] returns it as a zero-copy view), `version` (a number
#'   that increases with every value stored in the store, so an overwrite
#'   always has a larger version than the value it replaced) and `storage`
#'   (`"inline"` in the helper's journal, or `"file"`).
#'
#' Errors are classed conditions (see [yaplr-conditions]): a bad tag gives
#' `yaplr_bad_tag`, a missing object `yaplr_not_found`, a full store
#' `yaplr_no_space`, a helper that does not answer in time `yaplr_timeout`,
#' a conditional send whose condition does not hold `yaplr_conflict`.
#'
#' @name objects
#' @examples
#' # Use a private temporary store for this example.
#' old <- options(yaplr.dir = file.path(tempdir(), "yaplr-example"))
#' send_object(1:10, "myobject")
#' does_object_exist("myobject")
#' list_objects()
#' retrieve_object("myobject")
#' remove_object("myobject")
#' quit_server()
#' options(old)
NULL

#' @rdname objects
#' @export
send_object <- function(obj, tag, automatic_server_start = NULL,
                        check_server_with_ping = TRUE,
                        force_unserialize_on_server = FALSE,
                        timeout = NULL, namespace = NULL, description = NULL,
                        if_absent = FALSE, if_version = NULL) {
  if (missing(obj)) abort_yaplr("bad_argument", "`obj` is missing; give the object to store.")
  if (missing(tag)) abort_missing_tag()
  res <- .Call(wrap__send_object_, NULL, obj, tag, namespace, description, timeout,
               automatic_server_start, NULL, if_absent, if_version)
  invisible(if (is.object(res)) check_result(res) else res)
}

#' @rdname objects
#' @export
retrieve_object <- function(tag, automatic_server_start = NULL,
                            check_server_with_ping = TRUE,
                            timeout = NULL, copy = FALSE, namespace = NULL,
                            with_version = FALSE) {
  if (missing(tag)) abort_missing_tag()
  res <- .Call(wrap__retrieve_object_, NULL, tag, namespace, timeout, automatic_server_start,
               copy, NULL, with_version)
  if (is.object(res)) check_result(res) else res[[1L]]
}

#' @rdname objects
#' @export
does_object_exist <- function(tag, automatic_server_start = NULL,
                              check_server_with_ping = TRUE,
                              timeout = NULL, namespace = NULL) {
  if (missing(tag)) abort_missing_tag()
  res <- .Call(yaplr_object_exists, tag, namespace, timeout, automatic_server_start)
  if (is.object(res)) check_result(res) else res
}

#' @rdname objects
#' @export
remove_object <- function(tag, automatic_server_start = NULL,
                          check_server_with_ping = TRUE,
                          timeout = NULL, namespace = NULL) {
  if (missing(tag)) abort_missing_tag()
  invisible(check_result(remove_object_(NULL, tag, namespace, timeout, automatic_server_start)))
}

#' @rdname objects
#' @export
list_objects <- function(automatic_server_start = NULL,
                         check_server_with_ping = TRUE,
                         timeout = yaplr_timeout(),
                         namespace = yaplr_namespace()) {
  objects_frame(check_result(list_objects_(session(), namespace, timeout,
                                           autostart_option(automatic_server_start))),
                all = is.null(namespace))
}

#' @rdname objects
#' @export
remove_objects <- function(namespace = yaplr_namespace(),
                           automatic_server_start = NULL,
                           timeout = yaplr_timeout()) {
  invisible(check_result(remove_objects_(session(), namespace, timeout,
                                         autostart_option(automatic_server_start))))
}

#' @rdname objects
#' @export
object_info <- function(tag, namespace = NULL, automatic_server_start = NULL,
                        timeout = NULL) {
  if (missing(tag)) abort_missing_tag()
  res <- .Call(yaplr_object_info, tag, namespace, timeout, automatic_server_start)
  if (is.object(res)) check_result(res) else res
}

# list_objects() of the columns the glue returns: row names the tags, or
# with `all` (every namespace) columns namespace and tag.
objects_frame <- function(res, all) {
  description <- res$description
  description[!nzchar(description)] <- NA_character_
  out <- data.frame(
    size = res$size,
    ctime = .POSIXct(res$ctime),
    class = res$class,
    description = description,
    stringsAsFactors = FALSE
  )
  if (all) {
    out$namespace <- res$namespace
    out$tag <- res$tag
    return(out)
  }
  rownames(out) <- res$tag
  out
}

#' Send or retrieve several objects at once
#'
#' `send_objects()` stores every element of a named list under its name, all
#' or none: another session sees either all the new values or all the old
#' ones, never a mix, and if any object can not be stored, none is.
#' `retrieve_objects()` returns several objects as they were at one moment
#' (no send in between can make some of them newer than others).
#'
#' @param objects A named list; the names are the tags (each a valid tag,
#'   no name twice).
#' @param tags A character vector of tags.
#' @inheritParams objects
#' @param description `NULL`, or a character vector of descriptions, one per
#'   object (or one for all).
#' @return `send_objects()`: `NULL`, invisibly. `retrieve_objects()`: a named
#'   list of the objects, in the order of `tags`. A missing tag is an error of
#'   class `yaplr_not_found` (nothing is returned then).
#' @export
#' @examples
#' old <- options(yaplr.dir = file.path(tempdir(), "yaplr-example"))
#' send_objects(list(a = 1, b = "x", c = mtcars))
#' retrieve_objects(c("a", "b"))
#' quit_server()
#' options(old)
send_objects <- function(objects, namespace = yaplr_namespace(), description = NULL,
                         automatic_server_start = NULL, timeout = yaplr_timeout()) {
  check_required("objects", "a named list of the objects to store, such as list(x = 1, y = \"a\")")
  if (!is.list(objects) || is.object(objects) && !identical(class(objects), "list")) {
    abort_yaplr("bad_argument", "`objects` must be a named list, not {describe(objects)}.")
  }
  invisible(check_result(send_objects_(session(), as.list(objects), namespace, description,
                                       timeout, autostart_option(automatic_server_start),
                                       progress_delay())))
}

#' @rdname send_objects
#' @export
retrieve_objects <- function(tags, namespace = yaplr_namespace(), copy = FALSE,
                             automatic_server_start = NULL, timeout = yaplr_timeout()) {
  check_required("tags", "a character vector of the tags to retrieve", kind = "bad_tag")
  check_result(retrieve_objects_(session(), tags, namespace, copy, timeout,
                                 autostart_option(automatic_server_start), progress_delay()))
}
