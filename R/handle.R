# A store handle: one namespace of one store, with R's usual verbs.

#' A handle on a namespace of a store
#'
#' @description
#' `yaplr_store()` returns a handle that reads and writes the objects of one
#' namespace of one store with R's usual verbs:
#'
#' ```
#' s <- yaplr_store(namespace = "app1")
#' s$x <- 1:10          # send_object(1:10, "x", namespace = "app1")
#' s[["x"]]             # retrieve_object("x", namespace = "app1")
#' s$x <- NULL          # remove_object("x", namespace = "app1")
#' names(s); length(s); "x" %in% names(s); as.list(s)
#' ```
#'
#' Reading a tag that holds no object is an error of class
#' `yaplr_not_found` (as [retrieve_object()]), not `NULL`, so a typo is
#' never mistaken for a missing value. The handle holds only the store
#' directory and the namespace: it can be saved, or sent to another
#' process, and used there.
#'
#' @param namespace The namespace. Default `getOption("yaplr.namespace",
#'   "default")`.
#' @param dir The store directory. Default: the store of this session
#'   ([store_dir()]), fixed when the handle is made (a relative path is taken
#'   from the working directory then).
#' @param x A store handle.
#' @param name,i The tag.
#' @param value The object to store; `NULL` removes the tag.
#' @param ... Ignored.
#' @return `yaplr_store()`: a handle of class `yaplr_handle`. `names()`: the
#'   tags, sorted. `length()`: the number of objects. `as.list()`: a named
#'   list of every object of the namespace.
#' @export
#' @examples
#' old <- options(yaplr.dir = file.path(tempdir(), "yaplr-example"))
#' s <- yaplr_store(namespace = "example")
#' s$x <- 1:10
#' s[["y"]] <- "hello"
#' names(s)
#' s$x
#' s
#' s$x <- NULL
#' length(s)
#' quit_server()
#' options(old)
yaplr_store <- function(namespace = yaplr_namespace(), dir = store_dir()) {
  namespace <- check_result(namespace_arg_(namespace))
  if (!is.character(dir) || length(dir) != 1L || is.na(dir) || !nzchar(dir)) {
    abort_yaplr("bad_argument", "`dir` must be a single directory path, not {describe(dir)}.")
  }
  dir <- resolve_store_dir(dir)
  structure(list(), namespace = namespace, dir = dir, class = "yaplr_handle")
}

# The verbs of a store handle call the glue with the session of the
# handle's store and its namespace; errors name the caller's call.
handle_get <- function(x, tag, call = caller_call()) {
  check_result(retrieve_object_(session_of(attr(x, "dir")), tag, attr(x, "namespace"),
                                yaplr_timeout(), autostart_option(NULL), FALSE,
                                progress_delay(), FALSE), call)[[1L]]
}

handle_list <- function(x, call = caller_call()) {
  objects_frame(check_result(list_objects_(session_of(attr(x, "dir")), attr(x, "namespace"),
                                           yaplr_timeout(), autostart_option(NULL)), call),
                all = FALSE)
}

#' @rdname yaplr_store
#' @export
`$.yaplr_handle` <- function(x, name) {
  handle_get(x, name)
}

#' @rdname yaplr_store
#' @export
`[[.yaplr_handle` <- function(x, i, ...) {
  handle_get(x, i)
}

#' @rdname yaplr_store
#' @export
`$<-.yaplr_handle` <- function(x, name, value) {
  store_value(x, name, value)
}

#' @rdname yaplr_store
#' @export
`[[<-.yaplr_handle` <- function(x, i, ..., value) {
  store_value(x, i, value)
}

store_value <- function(x, tag, value, call = caller_call()) {
  h <- session_of(attr(x, "dir"))
  ns <- attr(x, "namespace")
  check_result(if (is.null(value)) {
    remove_object_(h, tag, ns, yaplr_timeout(), autostart_option(NULL))
  } else {
    send_object_(h, value, tag, ns, NULL, yaplr_timeout(),
                 autostart_option(NULL), progress_delay(), FALSE, NULL)
  }, call)
  x
}

#' @rdname yaplr_store
#' @export
names.yaplr_handle <- function(x) {
  rownames(handle_list(x))
}

#' @rdname yaplr_store
#' @export
length.yaplr_handle <- function(x) {
  nrow(handle_list(x))
}

#' @rdname yaplr_store
#' @export
as.list.yaplr_handle <- function(x, ...) {
  tags <- names(x)
  out <- lapply(tags, function(tag) handle_get(x, tag))
  names(out) <- tags
  out
}

#' @rdname yaplr_store
#' @export
print.yaplr_handle <- function(x, ...) {
  lst <- handle_list(x)
  cat("<yaplr store> namespace \"", attr(x, "namespace"), "\" of ", attr(x, "dir"), "\n", sep = "")
  if (nrow(lst) == 0L) {
    cat("(no objects)\n")
  } else {
    print(lst)
  }
  invisible(x)
}
