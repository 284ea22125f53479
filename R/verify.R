# Checking a store's objects against their checksums.

#' Check stored objects for damage
#'
#' Every object's payload carries a checksum computed while it was written.
#' `verify_objects()` reads every object of the store (or of one namespace)
#' and checks it. Retrieving an object with a copy (`copy = TRUE`, or any
#' object that is not a zero-copy vector) checks it too; a zero-copy view is
#' not checked when it is retrieved, since its data is not read then.
#'
#' @param namespace The namespace to check; `NULL` (the default) checks
#'   every namespace.
#' @inheritParams objects
#' @return A data frame with one row per object: `namespace`, `tag`, `size`
#'   (bytes), `checked` (`FALSE` for objects written by versions of yaplr
#'   that recorded no checksum) and `ok`, invisibly. When an object is
#'   damaged, an error of class `yaplr_corrupt` naming it (its `tag` field
#'   is the first damaged tag; its `damaged` field is the data frame of the
#'   damaged objects).
#' @export
#' @examples
#' old <- options(yaplr.dir = file.path(tempdir(), "yaplr-example"))
#' send_object(1:10, "x")
#' verify_objects()
#' quit_server()
#' options(old)
verify_objects <- function(namespace = NULL, automatic_server_start = NULL,
                           timeout = yaplr_timeout()) {
  res <- check_result(verify_objects_(session(), namespace, timeout,
                                      autostart_option(automatic_server_start)))
  out <- data.frame(namespace = res$namespace, tag = res$tag, size = res$size,
                    checked = res$checked, ok = res$ok, stringsAsFactors = FALSE)
  bad <- which(!res$ok)
  if (length(bad)) {
    damaged <- out[bad, c("namespace", "tag")]
    damaged$problem <- res$problem[bad]
    shown <- head(bad, 5L)
    names <- paste0("\"", out$tag[shown], "\"", ifelse(out$namespace[shown] == "default", "",
                    paste0(" (namespace \"", out$namespace[shown], "\")")), collapse = ", ")
    more <- if (length(bad) > 5L) paste0(" and ", length(bad) - 5L, " more") else ""
    abort_yaplr(
      "corrupt",
      "{length(bad)} of {nrow(out)} stored objects are damaged: {names}{more}; remove them with remove_object() and send them again.",
      tag = out$tag[bad[1L]], damaged = damaged
    )
  }
  invisible(out)
}
