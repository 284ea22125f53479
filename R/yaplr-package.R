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
  removeTaskCallback(lock_callback)
  the$sessions <- NULL
  gc()
}

# Lock handles not yet released get their finalizer at the end of every
# top-level call (see src/rust/r/src/lock_handle.rs).
lock_callback <- "yaplr-lock-handles"

.onLoad <- function(libname, pkgname) {
  removeTaskCallback(lock_callback)
  addTaskCallback(function(...) {
    .Call(yaplr_flush_lock_handles)
    TRUE
  }, name = lock_callback)
  invisible()
}
