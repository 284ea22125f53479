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
  namespace <- check_namespace(namespace)
  if (!is.character(dir) || length(dir) != 1L || is.na(dir) || !nzchar(dir)) {
    abort_yaplr("bad_argument", "`dir` must be a single directory path, not {describe(dir)}.")
  }
  dir <- resolve_store_dir(dir)
  structure(list(), namespace = namespace, dir = dir, class = "yaplr_handle")
}

handle_call <- function(x, f, ...) {
  old <- options(yaplr.dir = attr(x, "dir"))
  on.exit(options(old))
  f(..., namespace = attr(x, "namespace"))
}

#' @rdname yaplr_store
#' @export
`$.yaplr_handle` <- function(x, name) {
  handle_call(x, retrieve_object, tag = name)
}

#' @rdname yaplr_store
#' @export
`[[.yaplr_handle` <- function(x, i, ...) {
  handle_call(x, retrieve_object, tag = i)
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

store_value <- function(x, tag, value) {
  if (is.null(value)) {
    handle_call(x, remove_object, tag = tag)
  } else {
    handle_call(x, send_object, obj = value, tag = tag)
  }
  x
}

#' @rdname yaplr_store
#' @export
names.yaplr_handle <- function(x) {
  rownames(handle_call(x, list_objects))
}

#' @rdname yaplr_store
#' @export
length.yaplr_handle <- function(x) {
  nrow(handle_call(x, list_objects))
}

#' @rdname yaplr_store
#' @export
as.list.yaplr_handle <- function(x, ...) {
  tags <- names(x)
  out <- lapply(tags, function(tag) handle_call(x, retrieve_object, tag = tag))
  names(out) <- tags
  out
}

#' @rdname yaplr_store
#' @export
print.yaplr_handle <- function(x, ...) {
  lst <- handle_call(x, list_objects)
  cat("<yaplr store> namespace \"", attr(x, "namespace"), "\" of ", attr(x, "dir"), "\n", sep = "")
  if (nrow(lst) == 0L) {
    cat("(no objects)\n")
  } else {
    print(lst)
  }
  invisible(x)
}
