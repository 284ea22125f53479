#' yaplr: share R objects between R sessions through shared memory
#'
#' `send_object()` stores an object under a tag; any other R session of the
#' same user on the same machine can then `retrieve_object()` it, even after
#' the sender has exited. A small helper process, `yaplrd`, is started on
#' the first call and keeps the catalogue of tags; each object lives in its
#' own file in the store directory (by default in `/dev/shm`, i.e. in RAM).
#'
#' See `vignette("yaplr")` for a walk-through, [yaplr-options] for the
#' options, and [yaplr-conditions] for the errors.
#'
#' @keywords internal
#' @useDynLib yaplr, .registration = TRUE
"_PACKAGE"

# The session handles' finalizers are code of yaplr.so: when the namespace is
# unloaded (a developer's pkgload::unload(), which may unload the library
# too), let them run first.
.onUnload <- function(libpath) {
  the$sessions <- NULL
  gc()
}
