# Dumping objects to one file and loading them back.

#' Save objects to a file, and load them into a store
#'
#' `save_objects()` writes objects of the store, with their tags,
#' namespaces, descriptions, metadata and send times, to one file.
#' `load_objects()` brings them back into any store (another directory,
#' another machine, a later day). Both stream: dumping or loading many GB
#' needs no more memory than a copy buffer, as the objects go straight
#' between the store's files and the dump.
#'
#' The dump format is versioned and described in `vignette("yaplr")`. Every
#' object carries a checksum: `save_objects()` refuses to dump a damaged
#' object, and a truncated or damaged dump is refused with a `yaplr_corrupt`
#' error before anything is loaded. Loading is all or none: every object is
#' read and checked first, then all become visible at once (a dump of more
#' than 40,000 objects is made visible in batches of that many, each all or
#' none); a session killed while loading leaves nothing.
#'
#' Both show a progress bar when they run longer than about two seconds in
#' an interactive session (see `yaplr.progress` in [yaplr-options]), and
#' stop at Ctrl-C: then no dump file is written, or nothing is loaded.
#'
#' @param file The dump file. `save_objects()` writes it to a temporary name
#'   first and renames it when complete.
#' @param tags `NULL` (the default) for every object of `namespace`, or a
#'   character vector of tags (each must exist).
#' @param namespace The namespace to save; `NULL` (the default) saves every
#'   namespace (then `tags` must be `NULL`).
#' @param overwrite Whether `load_objects()` may replace objects that exist
#'   in the store. With `FALSE` (the default), one existing tag makes it
#'   fail with `yaplr_bad_argument` before loading anything.
#' @inheritParams objects
#' @return `save_objects()`: the number of objects written, invisibly.
#'   `load_objects()`: a data frame of the `namespace` and `tag` loaded,
#'   invisibly.
#' @export
#' @examples
#' old <- options(yaplr.dir = file.path(tempdir(), "yaplr-example"))
#' send_object(mtcars, "cars", description = "the mtcars data")
#' f <- tempfile(fileext = ".ydump")
#' save_objects(f)
#' quit_server()
#' load_objects(f)
#' object_info("cars")$description
#' quit_server()
#' unlink(f)
#' options(old)
save_objects <- function(file, tags = NULL, namespace = NULL,
                         automatic_server_start = NULL, timeout = yaplr_timeout()) {
  check_required("file", "the path of the dump file to write")
  file <- check_file(file)
  if (dir.exists(file)) {
    abort_yaplr("bad_argument", "`file` must be the path of a file, not of the directory \"{file}\".")
  }
  if (!dir.exists(dirname(file))) {
    abort_yaplr("bad_argument",
      "the directory of `file`, \"{dirname(file)}\", does not exist; create it first or choose another path.")
  }
  invisible(check_result(save_objects_(session(), file, tags, namespace, yaplr_namespace(), timeout,
                                       autostart_option(automatic_server_start),
                                       progress_delay())))
}

#' @rdname save_objects
#' @export
load_objects <- function(file, overwrite = FALSE,
                         automatic_server_start = NULL, timeout = yaplr_timeout()) {
  check_required("file", "the path of the dump file to load")
  file <- check_file(file)
  if (!file.exists(file)) {
    abort_yaplr("bad_argument", "the dump file \"{file}\" does not exist.")
  }
  if (dir.exists(file)) {
    abort_yaplr("bad_argument", "`file` must be the path of a dump file, not of the directory \"{file}\".")
  }
  res <- check_result(load_objects_(session(), file, overwrite, timeout,
                                    autostart_option(automatic_server_start), progress_delay()))
  invisible(data.frame(namespace = res$namespace, tag = res$tag, stringsAsFactors = FALSE))
}

check_file <- function(file, call = caller_call()) {
  if (!is.character(file) || length(file) != 1L || is.na(file) || !nzchar(file)) {
    abort_yaplr("bad_argument", "`file` must be a single file path, not {describe(file)}.", call = call)
  }
  if (!is_valid_text(file)) {
    abort_yaplr("bad_argument",
      "`file` must be valid text in UTF-8, latin1 or the session's encoding.",
      call = call
    )
  }
  normalizePath(path.expand(file), mustWork = FALSE)
}
