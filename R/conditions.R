# Conditions, and the argument checks that need R (the Rust layer checks
# tags, namespaces, timeouts, flags and descriptions), all speaking with one
# voice.

#' Errors signalled by yaplr
#'
#' Every error has class `c("yaplr_<kind>", "yaplr_error", "error",
#' "condition")` (an interrupt: see `interrupted` below) and fields `message`, `tag` (when a tag was involved) and
#' `store` (the store directory), so it can be caught precisely:
#'
#' ```
#' tryCatch(retrieve_object("x"), yaplr_not_found = function(e) NULL)
#' ```
#'
#' The kinds:
#' * `bad_tag`: the tag is not a single non-empty string of at most 1024
#'   bytes.
#' * `bad_argument`: another argument is invalid (such as a `timeout` that is
#'   not a positive number) or missing.
#' * `not_found`: no object is stored under the tag.
#' * `conflict`: a conditional change found another state than it required:
#'   `send_object(if_absent = TRUE)` found an object, or
#'   `send_object(if_version = )` another version. Nothing was changed.
#' * `no_space`: the store's filesystem has no room for the object. Nothing
#'   was stored and the store keeps working.
#' * `timeout`: the helper did not start or answer within `timeout` seconds
#'   (see [yaplr-options]), or a wait ([wait_object()], [take_object()])
#'   ran out.
#' * `interrupted`: the user pressed Ctrl-C during a wait or a transfer. A
#'   send stops without storing anything (the tag keeps any earlier value);
#'   a retrieve returns nothing. Like R's own interrupts, this condition has
#'   class `"interrupt"` and not `"error"`: `c("yaplr_interrupted",
#'   "yaplr_error", "interrupt", "condition")`, so `tryCatch(interrupt = )`
#'   catches it and `try()` does not swallow it.
#' * `no_server`: no helper is running and automatic start is off.
#' * `store`: the store directory can not be used (not writable, owned by
#'   another user, not a directory, path too long, or a directory shared by
#'   every user such as `/` or `/tmp`).
#' * `server`, `protocol`: the helper failed or answered something
#'   unexpected.
#' * `corrupt`: a stored object file is damaged.
#' * `io`: another operating system error.
#'
#' @name yaplr-conditions
NULL

abort_yaplr <- function(kind, message, ..., tag = NULL, call = caller_call(),
                        .envir = parent.frame()) {
  message <- glue_lite(message, .envir)
  cnd <- structure(
    list(message = message, call = call, tag = tag, store = NULL, ...),
    class = c(paste0("yaplr_", kind), "yaplr_error", "error", "condition")
  )
  stop(cnd)
}

# Signal the condition of a failed call of the Rust layer (extendr returns
# it as the `value` of an "extendr_error"), or return the value.
check_result <- function(res, call = caller_call()) {
  if (inherits(res, "extendr_error")) {
    res <- res$value
    res$call <- call
    stop(res)
  }
  res
}

# The call of the function that called the function asking (n = 1).
caller_call <- function(n = 1L) {
  sys.call(sys.parent(n + 1L))
}

# A minimal "{expr}" interpolation for messages.
glue_lite <- function(x, envir) {
  m <- gregexpr("\\{[^{}]+\\}", x)
  parts <- regmatches(x, m)[[1L]]
  for (p in parts) {
    value <- eval(parse(text = substr(p, 2L, nchar(p) - 1L)), envir)
    x <- sub(p, paste(value, collapse = ", "), x, fixed = TRUE)
  }
  x
}

# What a value is, for "..., not <describe(x)>." in messages. An object of
# a class is named by its class ("a factor", "a data frame"), never by the
# type underneath.
describe <- function(x) {
  if (is.null(x)) {
    return("NULL")
  }
  if (is.object(x)) {
    return(describe_class(x))
  }
  if (is.atomic(x) && length(x) == 1L) {
    if (is.na(x)) {
      return(paste0("`", if (is.character(x)) "NA_character_" else "NA", "`"))
    }
    if (is.character(x)) {
      return(paste0("the string ", quote_text(x)))
    }
    return(paste0("the ", typeof(x), " ", format(x)))
  }
  if (is.function(x)) {
    return("a function")
  }
  if (is.environment(x)) {
    return("an environment")
  }
  kind <- if (is.atomic(x)) "vector" else "object"
  paste(a_or_an(typeof(x)), typeof(x), kind, "of length", length(x))
}

describe_class <- function(x) {
  if (is.data.frame(x)) {
    return("a data frame")
  }
  cls <- class(x)[1L]
  if (!is.atomic(x) || isS4(x)) {
    return(paste0("an object of class ", quote_text(cls)))
  }
  # length() may be a method of the class, and may fail.
  n <- tryCatch(length(x), error = function(e) NA)
  out <- paste(a_or_an(cls), cls)
  if (identical(n, 1L)) out else paste(out, "of length", n)
}

a_or_an <- function(word) {
  if (grepl("^[aeiouAEIOU]", word)) "an" else "a"
}

# A string in double quotes with escapes, shortened when long: messages
# stay readable whatever the user passed.
quote_text <- function(x, max = 60L) {
  s <- encodeString(x)
  if (nchar(s) > max) {
    s <- paste0(substr(s, 1L, max - 3L), "...")
  }
  paste0("\"", s, "\"")
}

# A required argument the caller left out gives a classed error naming it
# (R's own would be "argument "obj" is missing, with no default"). `arg` is
# the argument's name in `env`, `name` how the message calls it.
check_required <- function(arg, what, kind = "bad_argument", name = arg,
                           env = parent.frame(), call = caller_call()) {
  if (eval(substitute(missing(a), list(a = as.name(arg))), env)) {
    abort_yaplr(kind, "`{name}` is missing; give {what}.", call = call)
  }
  invisible()
}

# A tag left out (the Rust layer checks every tag given).
abort_missing_tag <- function(call = caller_call()) {
  abort_yaplr("bad_tag", "`tag` is missing; give the name of the object.", call = call)
}

# Whether a string can be turned into UTF-8 faithfully: not "bytes", valid
# in its declared encoding, and (in a locale that is neither UTF-8 nor
# latin1) ASCII when its encoding is unknown, as R would otherwise escape
# bytes as "<ff>".
is_valid_text <- function(x) {
  enc <- Encoding(x)
  # The common case first: text in a UTF-8 session.
  if (enc == "unknown" && identical(the$locale, "utf8")) {
    return(validUTF8(x))
  }
  if (enc == "bytes") {
    return(FALSE)
  }
  if (enc == "UTF-8") {
    return(validUTF8(x))
  }
  if (enc == "latin1") {
    return(TRUE)
  }
  if (is.null(the$locale)) {
    info <- l10n_info()
    the$locale <- if (isTRUE(info[["UTF-8"]])) "utf8" else if (isTRUE(info[["Latin-1"]])) "latin1" else "other"
  }
  switch(the$locale,
    utf8 = validUTF8(x),
    latin1 = TRUE,
    !grepl("[^\\x01-\\x7f]", x, useBytes = TRUE)
  )
}

# A name of a counter, lock, queue or barrier left out.
abort_missing_name <- function(call = caller_call()) {
  abort_yaplr("bad_tag", "`name` is missing; give its name.", call = call)
}
