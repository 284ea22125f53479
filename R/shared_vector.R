# Shared mutable vectors: elements in shared memory, read and written in
# place by every attached process.

#' Shared mutable vectors
#'
#' `shared_vector()` creates a fixed-length vector of type double, integer,
#' logical or raw in the store (all zeros, or `FALSE`), or attaches to the
#' existing one when called with the name only. `sv[i]` reads elements and
#' `sv[i] <- value` writes them straight into shared memory: every process
#' attached to the vector sees a write at once, without retrieving anything
#' again. `length(sv)` is its length and `sv[]` an ordinary copy of all its
#' elements.
#'
#' Each element is read and written whole (a process never sees half of a
#' double), but an update of several elements, or a read-modify-write such
#' as `sv[1] <- sv[1] + 1`, is not atomic: do it under [with_lock()], or use
#' a counter ([counter_add()]) for a shared count.
#'
#' A shared vector is an object of the store: [list_objects()] lists it,
#' [retrieve_object()] returns a copy of its elements, [remove_object()]
#' removes it (processes still attached keep their mapping, now private to
#' them) and [quit_server()] removes it with the store. Calling
#' `shared_vector()` with a `type` and `length` when the vector exists
#' attaches to it if they match, so every worker may run the same line.
#' Workers forked by [parallel::mclapply()] use the parent's handle as it
#' is; a handle sent to another process (or saved and restored) is no
#' longer attached and says so: call `shared_vector(name)` there.
#'
#' Indexing: positive indices, negative ones (all but those), logical ones
#' and a missing index work as for ordinary vectors; a read past the end
#' gives `NA`, a write past the end is an error (the vector never grows).
#' Values are converted to the vector's type as R would (`as.double()` and
#' so on).
#'
#' @param name The vector's name: a single non-empty string of at most 1024
#'   bytes (a tag of the store).
#' @param type One of `"double"` (the default), `"integer"`, `"logical"` or
#'   `"raw"`, for a new vector.
#' @param length The number of elements of a new vector. Leave out `type`
#'   and `length` to attach to an existing vector.
#' @inheritParams objects
#' @param x A shared vector.
#' @param i Indices.
#' @param value The values to write.
#' @param ... Ignored.
#' @return `shared_vector()`: a `yaplr_shared_vector` handle.
#' @examples
#' old <- options(yaplr.dir = file.path(tempdir(), "yaplr-example"))
#' sv <- shared_vector("progress", "integer", 4)
#' if (.Platform$OS.type == "unix") {
#'   # Each forked worker writes its own element.
#'   invisible(parallel::mclapply(1:4, function(i) sv[i] <- i * 10L, mc.cores = 2))
#' }
#' sv[]
#' length(sv)
#' remove_object("progress")
#' quit_server()
#' options(old)
#' @export
shared_vector <- function(name, type = NULL, length = NULL, timeout = yaplr_timeout(),
                          namespace = yaplr_namespace()) {
  if (missing(name)) abort_missing_name()
  if (!is.null(length) && is.null(type)) type <- "double"
  h <- check_result(shared_vector_(session(), name, type, length, namespace, timeout,
                                   autostart_option(NULL)))
  structure(h, name = name, namespace = namespace, class = "yaplr_shared_vector")
}

# Indices as the glue takes them: NULL (all), or positive positions.
sv_index <- function(x, i) {
  if (is.numeric(i) && !anyNA(i) && all(i >= 0)) {
    return(i)
  }
  if (is.numeric(i) && !anyNA(i) && all(i <= 0)) {
    return(seq_len(sv_length_(x))[i])
  }
  if (is.logical(i)) {
    return(seq_len(sv_length_(x))[i])
  }
  if (is.numeric(i)) {
    return(i)
  }
  abort_yaplr("bad_argument", sprintf("a shared vector is indexed by numbers or logicals, not %s.",
                                      describe(i)))
}

#' @rdname shared_vector
#' @export
`[.yaplr_shared_vector` <- function(x, i) {
  check_result(sv_read_(x, if (missing(i)) NULL else sv_index(x, i)))
}

#' @rdname shared_vector
#' @export
`[<-.yaplr_shared_vector` <- function(x, i, value) {
  value <- switch(attr(x, "type"),
    double = as.double(value),
    integer = as.integer(value),
    logical = as.logical(value),
    raw = as.raw(value)
  )
  check_result(sv_write_(x, if (missing(i)) NULL else sv_index(x, i), value))
  x
}

#' @rdname shared_vector
#' @export
`[[.yaplr_shared_vector` <- function(x, i) {
  if (length(i) != 1L) abort_yaplr("bad_argument", "`[[` takes a single index.")
  x[i]
}

#' @rdname shared_vector
#' @export
`[[<-.yaplr_shared_vector` <- function(x, i, value) {
  if (length(i) != 1L) abort_yaplr("bad_argument", "`[[<-` takes a single index.")
  x[i] <- value
  x
}

#' @rdname shared_vector
#' @export
length.yaplr_shared_vector <- function(x) {
  check_result(sv_length_(x))
}

#' @rdname shared_vector
#' @export
print.yaplr_shared_vector <- function(x, ...) {
  n <- tryCatch(length(x), error = function(e) NA)
  cat(sprintf("<yaplr_shared_vector \"%s\": %s %s>\n", attr(x, "name"),
              if (is.na(n)) "detached" else format(n), attr(x, "type")))
  if (!is.na(n) && n > 0) print(x[seq_len(min(n, 20))])
  if (!is.na(n) && n > 20) cat(sprintf("... and %s more\n", format(n - 20)))
  invisible(x)
}
