# Bad inputs, table-driven: every exported function, every argument and
# option, unusable store directories, damaged object files, a damaged
# journal and a full filesystem. Each case must fail with the expected classed error and a
# message matching `regexp`, and the store must keep working afterwards (a
# send + retrieve round trip). Cases that show a bug of the package carry
# `bug =` and skip, with that reason, just before their failing expectation
# (set YAPLR_TEST_KNOWN_BUGS=1 to run those expectations too, e.g. to see
# whether a bug was fixed).

is_root <- function() identical(Sys.info()[["effective_user"]], "root")

# --- object files ----------------------------------------------------------

object_files <- function(dir) {
  list.files(dir, pattern = "^[0-9a-f]{32}\\.yobj$", full.names = TRUE)
}

# The one object file of a store that holds exactly one object.
the_object_file <- function(dir) {
  f <- object_files(dir)
  if (length(f) != 1L) stop("expected one object file in ", dir, ", found ", length(f))
  f
}

read_bytes <- function(path) readBin(path, "raw", file.size(path))

write_bytes <- function(path, bytes) {
  force(bytes) # read before the file is truncated
  con <- file(path, "wb")
  on.exit(close(con))
  writeBin(bytes, con)
}

# Overwrite bytes in place at a 0-based offset.
poke <- function(path, offset, bytes) {
  b <- read_bytes(path)
  b[offset + seq_along(bytes)] <- as.raw(bytes)
  write_bytes(path, b)
}

u32le <- function(x) writeBin(as.integer(x), raw(), size = 4L, endian = "little")

# FNV-1a 64 (the header checksum), with 16-bit limbs in doubles.
fnv1a64 <- function(bytes) {
  h <- c(0x2325, 0x8422, 0x9ce4, 0xcbf2) # 0xcbf29ce484222325, low limb first
  for (b in as.integer(bytes)) {
    h[1] <- bitwXor(h[1], b)
    # h * (2^40 + 0x1b3) mod 2^64
    t <- h * 0x1b3
    t[3] <- t[3] + h[1] * 256
    t[4] <- t[4] + h[2] * 256
    for (i in 1:3) {
      t[i + 1] <- t[i + 1] + t[i] %/% 65536
      t[i] <- t[i] %% 65536
    }
    t[4] <- t[4] %% 65536
    h <- t
  }
  as.raw(c(rbind(h %% 256, h %/% 256)))
}

# Where the header checksum (FNV-1a 64 of the bytes before it) is: at 2040
# in format version 2, at 1088 in version 1.
header_checksum_at <- function(b) {
  for (at in c(2040L, 1088L)) {
    if (identical(fnv1a64(b[seq_len(at)]), b[at + 1:8])) return(at)
  }
  stop("no header checksum found")
}

# Write a header field and re-seal the header checksum, so that the helper
# and the client see a well-formed header with that content.
set_header_u32 <- function(path, offset, value) {
  b <- read_bytes(path)
  at <- header_checksum_at(b)
  b[offset + 1:4] <- u32le(value)
  b[at + 1:8] <- fnv1a64(b[seq_len(at)])
  write_bytes(path, b)
}

# SIGKILL the helper; the next call starts a new one, which rebuilds its
# catalog from its journal and the object files.
kill_helper <- function() {
  pid <- server_info()$pid
  tools::pskill(pid, tools::SIGKILL)
  wait_until(function() !pid_alive(pid) && !is_server_running(), what = "the helper to die")
}

# Larger than 64 KiB, so each has an object file: R serialization (a list)
# and a plain vector (raw elements, zero-copy). (A compact sequence such as
# as.double(1:1e4) would serialize small and live in the journal.)
dbl <- list(x = seq(0.5, 5000, by = 0.5))
big <- as.double(seq_len(1e5))

# Store one large object (more than 64 KiB: small ones live in the helper's
# journal, without a file) under `tag` in the current (empty) store; its
# file path.
stored_file <- function(dir, value, tag = "t") {
  send_object(value, tag)
  the_object_file(dir)
}

test_that("the R FNV-1a matches the checksum the helper writes", {
  dir <- local_store()
  f <- stored_file(dir, dbl)
  b <- read_bytes(f)
  expect_true(header_checksum_at(b) %in% c(2040L, 1088L))
  expect_identical(b[1:8], charToRaw("YAPLROBJ"))
})

# --- stores on a small or read-only tmpfs (root only) ----------------------

mount_tmpfs <- function(env, opts = "size=4m") {
  mnt <- tempfile("yaplr-mnt-")
  dir.create(mnt)
  withr::defer(unlink(mnt, recursive = TRUE), envir = env)
  if (system2("mount", c("-t", "tmpfs", "-o", opts, "tmpfs", mnt)) != 0) {
    skip("could not mount a tmpfs")
  }
  withr::defer(system2("umount", c("-l", mnt)), envir = env)
  mnt
}

# Switch the test to a store in `dir`, stopped before its filesystem goes.
use_store <- function(dir, env) {
  withr::local_options(yaplr.dir = dir, .local_envir = env)
  withr::defer(try(quit_server(timeout = 20), silent = TRUE), envir = env)
  dir
}

# A 4 MB tmpfs store; `fill = TRUE` also fills every free byte with a file
# that `ctx$free()` removes.
small_store <- function(env, fill = FALSE) {
  mnt <- mount_tmpfs(env)
  dir <- use_store(file.path(mnt, "store"), env)
  make_sure_server_is_started(quiet = TRUE)
  send_object("small", "a")
  filler <- file.path(mnt, "filler")
  if (fill) {
    system2("dd", c("if=/dev/zero", paste0("of=", filler), "bs=4096"),
            stdout = FALSE, stderr = FALSE)
  }
  list(dir = dir, free = function() unlink(filler))
}

# --- the cases ---------------------------------------------------------------
#
# name: what is bad; call: function(ctx) making the bad call; class: the
# expected condition class (several where either is right, such as a damaged
# object being reported or dropped); regexp: what the message must say;
# setup: function(env) preparing the case, returning ctx (the store dir is
# ctx$dir); check: more checks, function(err, ctx); after: function(ctx) run
# before the round trip; root: needs root; bug: a known bug, skipped just
# before the failing expectation (the class and message check, or with
# bug_in = "check", the more checks).

latin1_e <- iconv("\u00e9", "UTF-8", "latin1")
bytes_tag <- "\xff"
Encoding(bytes_tag) <- "bytes"
a_file <- function(env) {
  f <- withr::local_tempfile(.local_envir = env)
  writeLines("not a directory", f)
  f
}

bad_tag_cases <- list(
  list(name = "NA tag", call = function(ctx) send_object(1, NA_character_),
       class = "yaplr_bad_tag", regexp = "`tag` must be a single non-empty string, not `NA_character_`"),
  list(name = "empty tag", call = function(ctx) send_object(1, ""),
       class = "yaplr_bad_tag", regexp = "`tag` must be a single non-empty string, not the string \"\""),
  list(name = "two tags", call = function(ctx) send_object(1, c("a", "b")),
       class = "yaplr_bad_tag", regexp = "`tag` must be a single .*character vector of length 2"),
  list(name = "zero-length tag", call = function(ctx) retrieve_object(character()),
       class = "yaplr_bad_tag", regexp = "`tag` must be a single .*length 0"),
  list(name = "numeric tag", call = function(ctx) does_object_exist(1),
       class = "yaplr_bad_tag", regexp = "`tag` must be a single non-empty string, not the double 1"),
  list(name = "logical tag", call = function(ctx) remove_object(TRUE),
       class = "yaplr_bad_tag", regexp = "`tag` must be a single non-empty string, not the logical TRUE"),
  list(name = "logical NA tag", call = function(ctx) remove_object(NA),
       class = "yaplr_bad_tag", regexp = "`tag` must be a single non-empty string, not `NA`"),
  list(name = "NULL tag", call = function(ctx) send_object(1, NULL),
       class = "yaplr_bad_tag", regexp = "`tag` must be a single non-empty string, not NULL"),
  list(name = "list tag", call = function(ctx) retrieve_object(list("a")),
       class = "yaplr_bad_tag", regexp = "`tag` must be a single .*list object of length 1"),
  list(name = "factor tag", call = function(ctx) does_object_exist(factor("a")),
       class = "yaplr_bad_tag", regexp = "`tag` must be a single non-empty string, not a factor\\.$"),
  list(name = "missing tag (send)", call = function(ctx) send_object(1),
       class = "yaplr_bad_tag", regexp = "`tag` is missing"),
  list(name = "missing tag (remove)", call = function(ctx) remove_object(),
       class = "yaplr_bad_tag", regexp = "`tag` is missing"),
  list(name = "1025-byte tag", call = function(ctx) send_object(1, strrep("x", 1025)),
       class = "yaplr_bad_tag", regexp = "`tag` must be at most 1024 bytes long, not 1025 bytes"),
  list(name = "huge tag (1e6 bytes)", call = function(ctx) retrieve_object(strrep("x", 1e6)),
       class = "yaplr_bad_tag", regexp = "at most 1024 bytes long, not 1000000 bytes"),
  list(name = "513 two-byte characters", call = function(ctx) does_object_exist(strrep("\u00e9", 513)),
       class = "yaplr_bad_tag", regexp = "at most 1024 bytes long, not 1026 bytes"),
  list(name = "latin1 tag longer than 1024 bytes in UTF-8",
       call = function(ctx) send_object(1, strrep(latin1_e, 600)),
       class = "yaplr_bad_tag", regexp = "at most 1024 bytes long, not 1200 bytes"),
  list(name = "tag that is not valid UTF-8",
       call = function(ctx) send_object(1, "\xff\xfe"),
       check = function(err, ctx) expect_false(does_object_exist("<ff><fe>")),
       class = "yaplr_bad_tag", regexp = "UTF-8"),
  list(name = "tag with bytes encoding",
       call = function(ctx) send_object(1, bytes_tag),
       class = "yaplr_bad_tag", regexp = "`tag`")
)

timeout_msg <- "`timeout` must be a single positive number of seconds \\(default: options\\(yaplr.timeout = \\)\\)"
bad_timeout_cases <- list(
  list(name = "timeout 0", call = function(ctx) send_object(1, "x", timeout = 0),
       class = "yaplr_bad_argument", regexp = paste0(timeout_msg, ", not the double 0")),
  list(name = "negative timeout", call = function(ctx) retrieve_object("x", timeout = -1),
       class = "yaplr_bad_argument", regexp = paste0(timeout_msg, ", not the double -1")),
  list(name = "NA timeout", call = function(ctx) does_object_exist("x", timeout = NA),
       class = "yaplr_bad_argument", regexp = paste0(timeout_msg, ", not `NA`")),
  list(name = "NA_real_ timeout", call = function(ctx) remove_object("x", timeout = NA_real_),
       class = "yaplr_bad_argument", regexp = paste0(timeout_msg, ", not `NA`")),
  list(name = "Inf timeout", call = function(ctx) list_objects(timeout = Inf),
       class = "yaplr_bad_argument", regexp = paste0(timeout_msg, ", not the double Inf")),
  list(name = "string timeout", call = function(ctx) make_sure_server_is_started(timeout = "10"),
       class = "yaplr_bad_argument", regexp = paste0(timeout_msg, ", not the string \"10\"")),
  list(name = "-Inf timeout", call = function(ctx) make_sure_server_is_down(timeout = -Inf),
       class = "yaplr_bad_argument", regexp = timeout_msg),
  list(name = "NaN timeout", call = function(ctx) quit_server(timeout = NaN),
       class = "yaplr_bad_argument", regexp = timeout_msg),
  list(name = "two timeouts", call = function(ctx) ping_server(timeout = c(1, 2)),
       class = "yaplr_bad_argument", regexp = paste0(timeout_msg, ", not a double vector of length 2")),
  list(name = "NULL timeout", call = function(ctx) server_info(timeout = NULL),
       class = "yaplr_bad_argument", regexp = paste0(timeout_msg, ", not NULL")),
  list(name = "logical timeout", call = function(ctx) send_object(1, "x", timeout = TRUE),
       class = "yaplr_bad_argument", regexp = timeout_msg),
  list(name = "complex timeout", call = function(ctx) list_objects(timeout = 1i),
       class = "yaplr_bad_argument", regexp = timeout_msg),
  list(name = "negative option yaplr.timeout",
       call = function(ctx) withr::with_options(list(yaplr.timeout = -5), retrieve_object("x")),
       class = "yaplr_bad_argument", regexp = "options\\(yaplr\\.timeout"),
  list(name = "string option yaplr.timeout",
       call = function(ctx) withr::with_options(list(yaplr.timeout = "abc"), list_objects()),
       class = "yaplr_bad_argument", regexp = "options\\(yaplr\\.timeout"),
  list(name = "timeout too short to start the helper",
       call = function(ctx) send_object(1, "x", timeout = 1e-6),
       class = "yaplr_timeout", regexp = "yaplr\\.timeout")
)

flag_cases <- list(
  list(name = "NA automatic_server_start",
       call = function(ctx) send_object(1, "x", automatic_server_start = NA),
       class = "yaplr_bad_argument", regexp = "`automatic_server_start` must be TRUE or FALSE \\(default: options\\(yaplr.automatic_server_start = \\)\\), not `NA`"),
  list(name = "string automatic_server_start",
       call = function(ctx) retrieve_object("x", automatic_server_start = "yes"),
       class = "yaplr_bad_argument", regexp = "`automatic_server_start` must be TRUE or FALSE \\(default: options\\(yaplr.automatic_server_start = \\)\\), not the string \"yes\""),
  list(name = "two automatic_server_start",
       call = function(ctx) does_object_exist("x", automatic_server_start = c(TRUE, FALSE)),
       class = "yaplr_bad_argument", regexp = "`automatic_server_start` must be TRUE or FALSE \\(default: options\\(yaplr.automatic_server_start = \\)\\), not a logical vector of length 2"),
  list(name = "numeric automatic_server_start",
       call = function(ctx) remove_object("x", automatic_server_start = 1),
       class = "yaplr_bad_argument", regexp = "`automatic_server_start` must be TRUE or FALSE \\(default: options\\(yaplr.automatic_server_start = \\)\\), not the double 1"),
  list(name = "NA automatic_server_start (list)",
       call = function(ctx) list_objects(automatic_server_start = NA),
       class = "yaplr_bad_argument", regexp = "`automatic_server_start` must be TRUE or FALSE"),
  list(name = "bad option yaplr.automatic_server_start",
       call = function(ctx) {
         withr::with_options(list(yaplr.automatic_server_start = "no"), send_object(1, "x"))
       },
       class = "yaplr_bad_argument", regexp = "options\\(yaplr\\.automatic_server_start"),
  list(name = "automatic start off and no helper",
       call = function(ctx) does_object_exist("x", automatic_server_start = FALSE),
       class = "yaplr_no_server", regexp = "make_sure_server_is_started\\(\\)"),
  list(name = "server_info() without a helper",
       call = function(ctx) server_info(),
       class = "yaplr_no_server", regexp = "no yaplr helper is running.*make_sure_server_is_started\\(\\)"),
  list(name = "NA copy", call = function(ctx) retrieve_object("x", copy = NA),
       class = "yaplr_bad_argument", regexp = "`copy` must be TRUE or FALSE, not `NA`"),
  list(name = "string copy", call = function(ctx) retrieve_object("x", copy = "yes"),
       class = "yaplr_bad_argument", regexp = "`copy` must be TRUE or FALSE, not the string \"yes\""),
  list(name = "zero-length copy", call = function(ctx) retrieve_object("x", copy = logical()),
       class = "yaplr_bad_argument", regexp = "`copy` must be TRUE or FALSE, not a logical vector of length 0"),
  list(name = "numeric copy", call = function(ctx) retrieve_object("x", copy = 1),
       class = "yaplr_bad_argument", regexp = "`copy` must be TRUE or FALSE, not the double 1"),
  list(name = "NA quiet", call = function(ctx) make_sure_server_is_started(quiet = NA),
       class = "yaplr_bad_argument", regexp = "`quiet` must be TRUE or FALSE, not `NA`"),
  list(name = "string quiet", call = function(ctx) make_sure_server_is_started(quiet = "no"),
       class = "yaplr_bad_argument", regexp = "`quiet` must be TRUE or FALSE, not the string \"no\""),
  list(name = "NULL quiet", call = function(ctx) ping_server(quiet = NULL),
       class = "yaplr_bad_argument", regexp = "`quiet` must be TRUE or FALSE, not NULL"),
  list(name = "two quiet", call = function(ctx) ping_server(quiet = c(TRUE, TRUE)),
       class = "yaplr_bad_argument", regexp = "`quiet` must be TRUE or FALSE, not a logical vector of length 2")
)

ns_msg <- "`namespace` must be a single non-empty string \\(default: options\\(yaplr.namespace = \\)\\)"
bytes_ns <- "\xff"
Encoding(bytes_ns) <- "bytes"
namespace_cases <- list(
  list(name = "NA namespace", call = function(ctx) send_object(1, "x", namespace = NA),
       class = "yaplr_bad_argument", regexp = paste0(ns_msg, ", not `NA`")),
  list(name = "empty namespace", call = function(ctx) retrieve_object("x", namespace = ""),
       class = "yaplr_bad_argument", regexp = paste0(ns_msg, ", not the string \"\"")),
  list(name = "two namespaces", call = function(ctx) list_objects(namespace = c("a", "b")),
       class = "yaplr_bad_argument", regexp = paste0(ns_msg, ", not a character vector of length 2")),
  list(name = "numeric namespace", call = function(ctx) remove_objects(namespace = 1),
       class = "yaplr_bad_argument", regexp = paste0(ns_msg, ", not the double 1")),
  list(name = "list namespace", call = function(ctx) remove_object("x", namespace = list("a")),
       class = "yaplr_bad_argument", regexp = ns_msg),
  list(name = "257-byte namespace", call = function(ctx) does_object_exist("x", namespace = strrep("n", 257)),
       class = "yaplr_bad_argument", regexp = "`namespace` must be at most 256 bytes long, not 257 bytes"),
  list(name = "bad option yaplr.namespace",
       call = function(ctx) withr::with_options(list(yaplr.namespace = 3), send_object(1, "x")),
       class = "yaplr_bad_argument", regexp = "options\\(yaplr\\.namespace"),
  list(name = "namespace with bytes encoding",
       call = function(ctx) send_object(1, "x", namespace = bytes_ns),
       class = "yaplr_bad_argument", regexp = "`namespace`"),
  list(name = "remove_objects() timeout 0", call = function(ctx) remove_objects(timeout = 0),
       class = "yaplr_bad_argument", regexp = paste0(timeout_msg, ", not the double 0")),
  list(name = "remove_objects() string automatic_server_start",
       call = function(ctx) remove_objects("ns", automatic_server_start = "a"),
       class = "yaplr_bad_argument", regexp = "`automatic_server_start` must be TRUE or FALSE \\(default: options\\(yaplr.automatic_server_start = \\)\\), not the string \"a\""),
  list(name = "remove_objects() with automatic start off and no helper",
       call = function(ctx) remove_objects(automatic_server_start = FALSE),
       class = "yaplr_no_server", regexp = "make_sure_server_is_started\\(\\)")
)

dir_msg <- "options\\(yaplr.dir = \\) must be a single directory path"
with_dir <- function(dir, code) withr::with_options(list(yaplr.dir = dir), code)
# A class whose length() fails (serialize() stores such an object fine),
# registered where send_object() finds it.
registerS3method("length", "yaplr_test_no_length",
                 function(x) stop("this object has no length"), envir = baseenv())
size_msg <- "`capacity` must be a number of bytes or a size such as \"2 GB\""
new_api_cases <- list(
  list(name = "object_info() NA tag", call = function(ctx) object_info(NA),
       class = "yaplr_bad_tag", regexp = "`tag` must be a single non-empty string, not `NA`"),
  list(name = "object_info() of a missing object", call = function(ctx) object_info("nothing here"),
       class = "yaplr_not_found", regexp = "no object is stored under tag \"nothing here\""),
  list(name = "object_info() numeric namespace", call = function(ctx) object_info("x", namespace = 2),
       class = "yaplr_bad_argument", regexp = paste0(ns_msg, ", not the double 2")),
  list(name = "numeric description", call = function(ctx) send_object(1, "x", description = 1),
       class = "yaplr_bad_argument", regexp = "`description` must be NULL or a single string, not the double 1"),
  list(name = "NA description", call = function(ctx) send_object(1, "x", description = NA),
       class = "yaplr_bad_argument", regexp = "`description` must be NULL or a single string, not `NA`"),
  list(name = "two descriptions", call = function(ctx) send_object(1, "x", description = c("a", "b")),
       class = "yaplr_bad_argument", regexp = "`description` must be NULL or a single string, not a character vector of length 2"),
  list(name = "an object whose length() method fails",
       call = function(ctx) {
         x <- structure(list(1), class = "yaplr_test_no_length")
         send_object(x, "no-length")
         if (!identical(unclass(retrieve_object("no-length")), list(1))) stop("a different value came back")
       },
       class = character(), regexp = ""),
  list(name = "NA keep", call = function(ctx) quit_server(keep = NA),
       class = "yaplr_bad_argument", regexp = "`keep` must be TRUE or FALSE, not `NA`"),
  list(name = "string keep", call = function(ctx) make_sure_server_is_down(keep = "yes"),
       class = "yaplr_bad_argument", regexp = "`keep` must be TRUE or FALSE, not the string \"yes\""),
  list(name = "string capacity", call = function(ctx) resize_store("abc"),
       class = "yaplr_bad_argument", regexp = paste0(size_msg, ", not the string \"abc\"")),
  list(name = "negative capacity", call = function(ctx) resize_store(-1),
       class = "yaplr_bad_argument", regexp = paste0(size_msg, ", not the double -1")),
  list(name = "NA capacity", call = function(ctx) resize_store(NA),
       class = "yaplr_bad_argument", regexp = paste0(size_msg, ", not `NA`")),
  list(name = "Inf capacity", call = function(ctx) resize_store(Inf),
       class = "yaplr_bad_argument", regexp = paste0(size_msg, ", not the double Inf")),
  list(name = "capacity with an unknown unit", call = function(ctx) resize_store("2 XB"),
       class = "yaplr_bad_argument", regexp = paste0(size_msg, ", not the string \"2 XB\"")),
  list(name = "resize_store() timeout 0", call = function(ctx) resize_store("1 GB", timeout = 0),
       class = "yaplr_bad_argument", regexp = paste0(timeout_msg, ", not the double 0")),
  list(name = "a capacity below what the store holds",
       setup = function(env) {
         send_object(dbl, "t")
         list()
       },
       call = function(ctx) resize_store(10),
       check = function(err, ctx) {
         expect_true(is.na(server_info()$capacity))
         expect_identical(retrieve_object("t"), dbl)
       },
       class = "yaplr_no_space", regexp = "capacity can not go below that \\(asked for 10\\); remove objects first"),
  list(name = "bad option yaplr.capacity",
       call = function(ctx) {
         withr::with_options(list(yaplr.capacity = "lots"), {
           utils::capture.output(send_object(1, "x"), type = "message")
         })
       },
       check = function(err, ctx) expect_false(does_object_exist("x")),
       class = "yaplr_bad_argument", regexp = "options\\(yaplr.capacity = \\).*not the string \"lots\""),
  list(name = "an object larger than options(yaplr.capacity)",
       call = function(ctx) withr::with_options(list(yaplr.capacity = 100), send_object(dbl, "t")),
       check = function(err, ctx) {
         expect_false(does_object_exist("t"))
         expect_identical(bad_input_stores$capacity, 100)
       },
       after = function(ctx) {
         bad_input_stores$capacity <- server_info()$capacity
         resize_store(NULL)
       },
       class = "yaplr_no_space", regexp = "\"t\""),
  list(name = "a store handle with an NA directory", call = function(ctx) yaplr_store(dir = NA),
       class = "yaplr_bad_argument", regexp = "`dir` must be a single directory path, not `NA`"),
  list(name = "a store handle with a numeric namespace", call = function(ctx) yaplr_store(namespace = 1),
       class = "yaplr_bad_argument", regexp = paste0(ns_msg, ", not the double 1")),
  list(name = "an empty tag through a store handle", call = function(ctx) yaplr_store()[[""]],
       class = "yaplr_bad_tag", regexp = "`tag` must be a single non-empty string, not the string \"\""),
  list(name = "a numeric tag through a store handle", call = function(ctx) yaplr_store()[[1]],
       class = "yaplr_bad_tag", regexp = "`tag` must be a single non-empty string, not the double 1"),
  list(name = "a missing object through a store handle", call = function(ctx) yaplr_store()$nope,
       class = "yaplr_not_found", regexp = "no object is stored under tag \"nope\"")
)

store_cases <- list(
  list(name = "NA option yaplr.dir", call = function(ctx) with_dir(NA, store_dir()),
       class = "yaplr_bad_argument", regexp = paste0(dir_msg, ", not `NA`")),
  list(name = "NA_character_ option yaplr.dir", call = function(ctx) with_dir(NA_character_, ping_server()),
       class = "yaplr_bad_argument", regexp = paste0(dir_msg, ", not `NA_character_`")),
  list(name = "two directories in yaplr.dir", call = function(ctx) with_dir(c("a", "b"), is_server_running()),
       class = "yaplr_bad_argument", regexp = paste0(dir_msg, ", not a character vector of length 2")),
  list(name = "numeric yaplr.dir", call = function(ctx) with_dir(1, send_object(1, "x")),
       class = "yaplr_bad_argument", regexp = paste0(dir_msg, ", not the double 1")),
  list(name = "list yaplr.dir", call = function(ctx) with_dir(list("/tmp"), list_objects()),
       class = "yaplr_bad_argument", regexp = dir_msg),
  list(name = "a regular file as the store (send)",
       setup = function(env) list(file = a_file(env)),
       call = function(ctx) with_dir(ctx$file, send_object(1, "x")),
       class = "yaplr_store", regexp = "exists but is not a directory.*options\\(yaplr.dir = \\)"),
  list(name = "a regular file as the store (start)",
       setup = function(env) list(file = a_file(env)),
       call = function(ctx) with_dir(ctx$file, make_sure_server_is_started()),
       class = "yaplr_store", regexp = "options\\(yaplr.dir = \\)"),
  list(name = "a store below a regular file",
       setup = function(env) list(file = a_file(env)),
       call = function(ctx) with_dir(file.path(ctx$file, "sub"), retrieve_object("x")),
       class = "yaplr_store", regexp = "Not a directory.*options\\(yaplr.dir = \\)"),
  list(name = "a store that can not be created (/proc)",
       call = function(ctx) with_dir("/proc/self/no-such-dir/store", list_objects()),
       class = "yaplr_store", regexp = "can not create the store directory \"/proc/self/no-such-dir/store\".*options\\(yaplr.dir = \\)"),
  list(name = "a symbolic link as the store",
       setup = function(env) {
         target <- withr::local_tempdir(.local_envir = env)
         link <- tempfile("yaplr-link-")
         file.symlink(target, link)
         withr::defer(unlink(link), envir = env)
         list(link = link)
       },
       call = function(ctx) with_dir(ctx$link, send_object(1, "x")),
       class = "yaplr_store", regexp = "not a directory \\(a symbolic link is refused too\\).*options\\(yaplr.dir = \\)"),
  list(name = "a store path too long for a socket",
       setup = function(env) {
         long <- file.path(tempdir(), strrep("d", 120))
         withr::defer(unlink(long, recursive = TRUE), envir = env)
         list(long = long)
       },
       call = function(ctx) with_dir(ctx$long, send_object(1, "x")),
       class = "yaplr_store", regexp = "too long for a Unix socket.*options\\(yaplr.dir = \\)"),
  list(name = "a store owned by another user", root = TRUE,
       setup = function(env) {
         other <- tempfile("yaplr-nobody-", tmpdir = "/dev/shm")
         dir.create(other, mode = "0700")
         withr::defer(unlink(other, recursive = TRUE), envir = env)
         if (system2("chown", c("nobody", shQuote(other))) != 0) skip("chown failed")
         list(other = other)
       },
       call = function(ctx) with_dir(ctx$other, send_object(1, "x")),
       check = function(err, ctx) expect_length(list.files(ctx$other, all.files = TRUE, no.. = TRUE), 0L),
       class = "yaplr_store", regexp = "belongs to uid [0-9]+, not to this user.*options\\(yaplr.dir = \\)"),
  list(name = "a store below a read-only filesystem", root = TRUE,
       setup = function(env) list(mnt = mount_tmpfs(env, "ro,size=1m")),
       call = function(ctx) with_dir(file.path(ctx$mnt, "store"), send_object(1, "x")),
       class = "yaplr_store", regexp = "can not create the store directory .*Read-only file system.*options\\(yaplr.dir = \\)"),
  list(name = "a read-only filesystem as the store", root = TRUE,
       setup = function(env) list(mnt = mount_tmpfs(env, "ro,size=1m,mode=0700")),
       call = function(ctx) with_dir(ctx$mnt, send_object(1, "x")),
       class = "yaplr_store", regexp = "is not writable.*options\\(yaplr.dir = \\)")
)

space_cases <- list(
  list(name = "a vector larger than the free space", root = TRUE,
       setup = function(env) small_store(env),
       call = function(ctx) send_object(runif(1e6), "big"),
       check = function(err, ctx) {
         expect_false(does_object_exist("big"))
         expect_identical(retrieve_object("a"), "small")
         expect_length(object_files(ctx$dir), 0L)
       },
       class = "yaplr_no_space", regexp = "not enough space in the store .*\"big\".*remove objects or choose a larger store"),
  list(name = "a serialized object larger than the free space", root = TRUE,
       setup = function(env) small_store(env),
       call = function(ctx) send_object(list(x = runif(1e6)), "big"),
       check = function(err, ctx) {
         expect_false(does_object_exist("big"))
         expect_length(object_files(ctx$dir), 0L)
       },
       class = "yaplr_no_space", regexp = "space.*\"big\".*remove objects or choose a larger store"),
  list(name = "a full filesystem (small object, journal)", root = TRUE,
       setup = function(env) small_store(env, fill = TRUE),
       call = function(ctx) send_object(runif(3000), "small-24k"),
       check = function(err, ctx) {
         expect_false(does_object_exist("small-24k"))
         expect_identical(retrieve_object("a"), "small")
       },
       after = function(ctx) ctx$free(),
       class = "yaplr_no_space", regexp = "space .*\"small-24k\".*remove objects or choose a larger store"),
  list(name = "a full filesystem (large object, file)", root = TRUE,
       setup = function(env) small_store(env, fill = TRUE),
       call = function(ctx) send_object(list(runif(2e4)), "large-160k"),
       check = function(err, ctx) {
         expect_false(does_object_exist("large-160k"))
         expect_length(object_files(ctx$dir), 0L)
         expect_identical(retrieve_object("a"), "small")
       },
       after = function(ctx) ctx$free(),
       class = "yaplr_no_space", regexp = "space .*\"large-160k\".*remove objects or choose a larger store")
)

# A list nested deeper than R's C stack allows: R itself refuses to
# serialize it. (No type of object was found that R refuses outright.)
too_deep <- function() {
  if (is.na(Cstack_info()[["size"]])) skip("the C stack is unlimited")
  x <- list()
  for (i in seq_len(1e6)) x <- list(x)
  ok <- tryCatch({
    serialize(x, NULL)
    TRUE
  }, error = function(e) FALSE)
  if (ok) skip("R serializes a list nested 1e6 deep here")
  list(deep = x)
}

serialize_cases <- list(
  list(name = "an object R refuses to serialize",
       setup = function(env) too_deep(),
       call = function(ctx) {
         # R reports its own error on the console first; keep it out of the log.
         utils::capture.output(send_object(ctx$deep, "deep"), type = "message")
       },
       check = function(err, ctx) {
         expect_false(does_object_exist("deep"))
         expect_length(object_files(ctx$dir), 0L)
       },
       class = "yaplr_bad_argument", regexp = "could not be serialized.*nothing was stored")
)

# Damaged object files. "restart" cases kill the helper so that a new one
# rebuilds its catalog from the damaged file.
damaged <- function(value, damage, restart = FALSE) {
  function(env) {
    dir <- getOption("yaplr.dir")
    f <- stored_file(dir, value)
    damage(f)
    if (restart) kill_helper()
    list(file = f)
  }
}
tag_field_is_t <- function(err, ctx) expect_identical(err$tag, "t")
# After a restart the helper may drop the damaged object, or keep it and
# report it damaged on retrieval.
dropped <- function(err, ctx, tag = "t") {
  if (inherits(err, "yaplr_not_found")) {
    expect_false(does_object_exist(tag))
    expect_false(tag %in% rownames(list_objects()))
  } else {
    expect_identical(err$tag, tag)
  }
}

corrupt_cases <- list(
  list(name = "damaged serialization header",
       setup = damaged(dbl, function(f) poke(f, 2048, rep(0, 8))),
       check = tag_field_is_t,
       class = "yaplr_corrupt", regexp = "the stored object \"t\" could not be read back: its data is damaged"),
  list(name = "damaged serialization header, helper restarted",
       setup = damaged(dbl, function(f) poke(f, 2048, rep(0, 8)), restart = TRUE),
       check = tag_field_is_t,
       class = "yaplr_corrupt", regexp = "the stored object \"t\" could not be read back: its data is damaged"),
  list(name = "damaged payload data (serialized)",
       setup = damaged(dbl, function(f) poke(f, 2048 + 4000, rep(0xff, 16))),
       class = "yaplr_corrupt", regexp = "the stored object \"t\" could not be read back: its data is damaged"),
  list(name = "damaged payload data (zero-copy vector)",
       setup = damaged(big, function(f) poke(f, 2048 + 64 + 8000, rep(0xff, 16))),
       call = function(ctx) retrieve_object("t", copy = TRUE),
       class = "yaplr_corrupt", regexp = "the stored object \"t\" could not be read back: its data is damaged"),
  list(name = "damaged vector header",
       setup = damaged(big, function(f) poke(f, 2048 + 4, u32le(3))),
       check = tag_field_is_t,
       class = "yaplr_corrupt", regexp = "damaged vector object: bad element size"),
  list(name = "header checksum mismatch",
       setup = damaged(dbl, function(f) poke(f, 70, 0x41)),
       check = tag_field_is_t,
       class = "yaplr_corrupt", regexp = "damaged object file: header checksum mismatch"),
  list(name = "header checksum mismatch: the message names the tag",
       setup = damaged(dbl, function(f) poke(f, 70, 0x41)),
       class = "yaplr_corrupt", regexp = "\"t\""),
  list(name = "header checksum mismatch, helper restarted",
       setup = damaged(dbl, function(f) poke(f, 70, 0x41), restart = TRUE),
       check = dropped,
       class = c("yaplr_corrupt", "yaplr_not_found"), regexp = "\"t\""),
  list(name = "wrong magic",
       setup = damaged(dbl, function(f) poke(f, 0, charToRaw("NOTYAPLR"))),
       check = tag_field_is_t,
       class = "yaplr_corrupt", regexp = "damaged object file: wrong magic number"),
  list(name = "wrong magic, helper restarted",
       setup = damaged(dbl, function(f) poke(f, 0, charToRaw("NOTYAPLR")), restart = TRUE),
       check = dropped,
       class = c("yaplr_corrupt", "yaplr_not_found"), regexp = "\"t\""),
  list(name = "truncated payload",
       setup = damaged(dbl, function(f) write_bytes(f, read_bytes(f)[1:2100])),
       check = tag_field_is_t,
       class = "yaplr_corrupt", regexp = "object \"t\" is truncated: 2100 bytes on disk, [0-9]+ expected"),
  list(name = "truncated payload, helper restarted",
       setup = damaged(dbl, function(f) write_bytes(f, read_bytes(f)[1:2100]), restart = TRUE),
       check = tag_field_is_t,
       class = "yaplr_corrupt", regexp = "object \"t\" is truncated"),
  list(name = "truncated header",
       setup = damaged(dbl, function(f) write_bytes(f, read_bytes(f)[1:100])),
       check = tag_field_is_t,
       class = "yaplr_corrupt", regexp = "damaged object file: shorter than its header"),
  list(name = "empty object file",
       setup = damaged(dbl, function(f) write_bytes(f, raw())),
       check = tag_field_is_t,
       class = "yaplr_corrupt", regexp = "damaged object file: shorter than its header"),
  list(name = "uncommitted object of a dead writer",
       setup = damaged(dbl, function(f) {
         set_header_u32(f, 20, -1L) # creator pid 0xffffffff: not a live process
         set_header_u32(f, 12, 1L) # state: writing
       }),
       check = tag_field_is_t,
       class = "yaplr_corrupt", regexp = "object \"t\" was never completely written"),
  list(name = "uncommitted object of a dead writer, helper restarted",
       setup = damaged(dbl, function(f) {
         set_header_u32(f, 20, -1L)
         set_header_u32(f, 12, 1L)
       }, restart = TRUE),
       check = function(err, ctx) {
         dropped(err, ctx)
         if (inherits(err, "yaplr_not_found")) expect_false(file.exists(ctx$file))
       },
       class = c("yaplr_corrupt", "yaplr_not_found"), regexp = "\"t\""),
  list(name = "unknown payload kind",
       setup = damaged(dbl, function(f) set_header_u32(f, 16, 99L)),
       check = tag_field_is_t,
       class = "yaplr_corrupt", regexp = "the stored object \"t\" has payload kind 99, unknown to this version of yaplr")
)
# The helper's journal holds the small objects and the links to the files
# of large ones. Small objects a, b and c around a large one, L, sent by a
# session that has exited; then the helper is killed, its journal damaged,
# and the next call starts a new helper that replays it.
journal_file <- function(dir) file.path(dir, "catalog.journal")
damaged_journal <- function(damage) {
  function(env) {
    dir <- getOption("yaplr.dir")
    send_object("value of a", "a")
    send_object("value of b", "b")
    in_session(function() yaplr::send_object(as.double(seq_len(1e5)), "L"))
    send_object("value of c", "c")
    kill_helper()
    damage(journal_file(dir))
    # The next helper reads the damaged journal (until then, clients read
    # the dead helper's index, as it was).
    make_sure_server_is_started(quiet = TRUE)
    list(dir = dir)
  }
}
intact <- function(...) {
  tags <- c(...)
  function(err, ctx) {
    values <- list(a = "value of a", b = "value of b", c = "value of c",
                   L = as.double(seq_len(1e5)))
    for (tag in tags) {
      got <- tryCatch(retrieve_object(tag), error = function(e) conditionMessage(e))
      expect_identical(got, values[[tag]], label = paste0("retrieve_object(\"", tag, "\")"))
    }
  }
}
in_journal <- function(path, what) grepRaw(what, read_bytes(path), fixed = TRUE)

journal_cases <- list(
  list(name = "a damaged record in the journal",
       setup = damaged_journal(function(j) poke(j, in_journal(j, "value of a") - 1L, 0x56)),
       call = function(ctx) retrieve_object("a"),
       class = c("yaplr_corrupt", "yaplr_not_found"), regexp = "\"a\"",
       check = intact("b", "L", "c"), bug_in = "check"),
  list(name = "a torn last record in the journal",
       setup = damaged_journal(function(j) write_bytes(j, head(read_bytes(j), -3L))),
       call = function(ctx) retrieve_object("c"),
       class = c("yaplr_corrupt", "yaplr_not_found"), regexp = "\"c\"",
       check = intact("a", "b", "L")),
  list(name = "a journal with a wrong magic",
       setup = damaged_journal(function(j) poke(j, 0, charToRaw("NOTAJRNL"))),
       call = function(ctx) retrieve_object("a"),
       class = c("yaplr_corrupt", "yaplr_not_found"), regexp = "\"a\"",
       check = intact("L")),
  list(name = "a missing journal",
       setup = damaged_journal(function(j) unlink(j)),
       call = function(ctx) retrieve_object("b"),
       class = c("yaplr_corrupt", "yaplr_not_found"), regexp = "\"b\"",
       check = intact("L"))
)

# R reports an unserialization failure on the console before yaplr signals
# yaplr_corrupt; keep that out of the test log.
retrieve_t <- function(ctx) {
  value <- NULL
  utils::capture.output(value <- retrieve_object("t"), type = "message")
  value
}
for (i in seq_along(corrupt_cases)) {
  if (is.null(corrupt_cases[[i]][["call"]])) corrupt_cases[[i]][["call"]] <- retrieve_t
}

# --- store directories that are not the user's to take ----------------------
#
# A store is made private (mode 0700) and filled with the helper's files, so
# the root directory, shared or system directories and the home directory are
# refused before anything touches them (checked with calls that create
# nothing, as is_server_running() and store_dir()).

store_path_msg <- "can not be a store \\(yaplr makes its store private and fills it with its files\\); choose a directory of your own with options\\(yaplr.dir = \\), such as \""
# A directory of this user that everyone may write to, as /tmp.
shared_dir <- function(env) {
  d <- tempfile("yaplr-shared-", tmpdir = "/dev/shm")
  dir.create(d)
  Sys.chmod(d, "1777", use_umask = FALSE)
  withr::defer(remove_store(d), envir = env)
  list(shared = d)
}
path_cases <- list(
  list(name = "the root directory as the store", call = function(ctx) with_dir("/", send_object(1, "x")),
       class = "yaplr_store",
       regexp = paste0("^the store directory \"/\" is the root directory, shared by every user of the system, so it ", store_path_msg)),
  list(name = "the root directory as the store (is_server_running)",
       call = function(ctx) with_dir("/", is_server_running()),
       class = "yaplr_store", regexp = paste0("\"/\" is the root directory.*", store_path_msg)),
  list(name = "the root directory spelled //", call = function(ctx) with_dir("//", is_server_running()),
       class = "yaplr_store", regexp = "\"/\" \\(given as \"//\"\\) is the root directory"),
  list(name = "the root directory spelled /tmp/..", call = function(ctx) with_dir("/tmp/..", store_dir()),
       class = "yaplr_store", regexp = "\"/\" \\(given as \"/tmp/\\.\\.\"\\) is the root directory"),
  list(name = "~ when HOME is /",
       call = function(ctx) withr::with_envvar(c(HOME = "/"), with_dir("~", is_server_running())),
       class = "yaplr_store", regexp = "\"/\" \\(given as \"~\"\\) is the root directory"),
  list(name = "the home directory as the store",
       setup = function(env) list(home = withr::local_tempdir(.local_envir = env)),
       call = function(ctx) withr::with_envvar(c(HOME = ctx$home), with_dir("~/", store_dir())),
       class = "yaplr_store", regexp = paste0("\\(given as \"~/\"\\) is your home directory, so it ", store_path_msg, ".*/yaplr-store\"$")),
  # (/tmp is shared, mode 1777; a system directory all the same.)
  list(name = "/tmp as the store", call = function(ctx) with_dir("/tmp/", is_server_running()),
       class = "yaplr_store", regexp = paste0("\"/tmp\" \\(given as \"/tmp/\"\\) is (shared by every user of the system \\(anyone may create files in it\\)|a system directory), ")),
  list(name = "/dev/shm as the store", call = function(ctx) with_dir("/dev/shm/x/..", store_dir()),
       class = "yaplr_store", regexp = "\"/dev/shm\" \\(given as \"/dev/shm/x/\\.\\.\"\\) is (shared by every user|a system directory)"),
  list(name = "a system directory as the store", call = function(ctx) with_dir("/usr", is_server_running()),
       class = "yaplr_store", regexp = paste0("\"/usr\" is a system directory, shared by every user of the system, so it ", store_path_msg)),
  list(name = "a directory writable by every user as the store",
       setup = shared_dir,
       call = function(ctx) with_dir(ctx$shared, send_object(1, "x")),
       check = function(err, ctx) {
         expect_identical(as.character(file.info(ctx$shared)$mode), "1777")
         expect_identical(list.files(ctx$shared, all.files = TRUE, no.. = TRUE), character())
       },
       class = "yaplr_store", regexp = "is shared by every user of the system \\(anyone may create files in it\\)"),
  list(name = "a store handle on the root directory", call = function(ctx) yaplr_store(dir = "/"),
       class = "yaplr_store", regexp = "\"/\" is the root directory"),
  list(name = "yaplr.dir that is not valid UTF-8",
       call = function(ctx) with_dir("/tmp/\xff\xfe", store_dir()),
       class = "yaplr_bad_argument", regexp = "options\\(yaplr.dir = \\) must be valid text"),
  list(name = "yaplr.dir with bytes encoding",
       call = function(ctx) with_dir(bytes_tag, send_object(1, "x")),
       class = "yaplr_bad_argument", regexp = "options\\(yaplr.dir = \\) must be valid text")
)

# --- required arguments left out --------------------------------------------

pass_through <- function(x) send_object(x, "t")
missing_cases <- list(
  list(name = "missing obj", call = function(ctx) send_object(tag = "x"),
       check = function(err, ctx) expect_false(does_object_exist("x")),
       class = "yaplr_bad_argument", regexp = "^`obj` is missing; give the object to store\\.$"),
  list(name = "missing obj and tag", call = function(ctx) send_object(),
       class = "yaplr_bad_argument", regexp = "^`obj` is missing"),
  list(name = "missing obj passed through a function", call = function(ctx) pass_through(),
       class = "yaplr_bad_argument", regexp = "^`obj` is missing"),
  list(name = "missing tag (retrieve)", call = function(ctx) retrieve_object(),
       class = "yaplr_bad_tag", regexp = "^`tag` is missing; give the name of the object\\.$"),
  list(name = "missing tag (exists)", call = function(ctx) does_object_exist(),
       class = "yaplr_bad_tag", regexp = "^`tag` is missing"),
  list(name = "missing tag (info)", call = function(ctx) object_info(),
       class = "yaplr_bad_tag", regexp = "^`tag` is missing"),
  list(name = "missing objects", call = function(ctx) send_objects(),
       class = "yaplr_bad_argument", regexp = "^`objects` is missing; give a named list of the objects to store"),
  list(name = "missing tags", call = function(ctx) retrieve_objects(),
       class = "yaplr_bad_tag", regexp = "^`tags` is missing; give a character vector of the tags to retrieve\\.$"),
  list(name = "missing file (save)", call = function(ctx) save_objects(),
       class = "yaplr_bad_argument", regexp = "^`file` is missing; give the path of the dump file to write\\.$"),
  list(name = "missing file (load)", call = function(ctx) load_objects(),
       class = "yaplr_bad_argument", regexp = "^`file` is missing; give the path of the dump file to load\\.$"),
  list(name = "missing capacity", call = function(ctx) resize_store(),
       class = "yaplr_bad_argument", regexp = "^`capacity` is missing; give the new capacity")
)

# --- values named by their class --------------------------------------------

class_cases <- list(
  list(name = "factor tag of length 2", call = function(ctx) retrieve_object(factor(c("a", "b"))),
       class = "yaplr_bad_tag", regexp = "not a factor of length 2\\.$"),
  list(name = "factor namespace", call = function(ctx) send_object(1, "x", namespace = factor("a")),
       class = "yaplr_bad_argument", regexp = "not a factor\\.$"),
  list(name = "factor description", call = function(ctx) send_object(1, "x", description = factor("d")),
       class = "yaplr_bad_argument", regexp = "`description` must be NULL or a single string, not a factor\\.$"),
  list(name = "Date timeout", call = function(ctx) send_object(1, "x", timeout = as.Date("2020-01-01")),
       class = "yaplr_bad_argument", regexp = paste0(timeout_msg, ", not a Date\\.$")),
  list(name = "difftime timeout", call = function(ctx) ping_server(timeout = as.difftime(5, units = "secs")),
       class = "yaplr_bad_argument", regexp = paste0(timeout_msg, ", not a difftime\\.$")),
  list(name = "POSIXct namespace", call = function(ctx) list_objects(namespace = Sys.time()),
       class = "yaplr_bad_argument", regexp = "not a POSIXct\\.$"),
  list(name = "a data frame as objects", call = function(ctx) send_objects(data.frame(a = 1)),
       class = "yaplr_bad_argument", regexp = "^`objects` must be a named list, not a data frame\\.$"),
  list(name = "a factor as yaplr.dir", call = function(ctx) with_dir(factor("/tmp/x"), store_dir()),
       class = "yaplr_bad_argument", regexp = paste0(dir_msg, ", not a factor\\.$")),
  list(name = "an S3 list object as tag", call = function(ctx) send_object(1, structure(list(), class = "foo")),
       class = "yaplr_bad_tag", regexp = "not an object of class \"foo\"\\.$"),
  list(name = "an integer vector as tag", call = function(ctx) send_object(1, 1:2),
       class = "yaplr_bad_tag", regexp = "not an integer vector of length 2\\.$"),
  list(name = "a function as tag", call = function(ctx) send_object(1, mean),
       class = "yaplr_bad_tag", regexp = "not a function\\.$"),
  list(name = "a long string as timeout", call = function(ctx) send_object(1, "x", timeout = strrep("x", 1e5)),
       class = "yaplr_bad_argument", regexp = "not the string \"x{57}\\.\\.\\.\"\\.$"),
  list(name = "a string with a newline as timeout", call = function(ctx) send_object(1, "x", timeout = "1\n"),
       class = "yaplr_bad_argument", regexp = "not the string \"1\\\\n\"\\.$")
)

# --- more arguments ---------------------------------------------------------

a_dir <- function(env) list(d = withr::local_tempdir(.local_envir = env))
more_cases <- list(
  list(name = "description that is not valid UTF-8",
       call = function(ctx) send_object(1, "x", description = "\xff\xfe"),
       check = function(err, ctx) expect_false(does_object_exist("x")),
       class = "yaplr_bad_argument", regexp = "^`description` must be valid text"),
  list(name = "description with bytes encoding",
       call = function(ctx) send_object(1, "x", description = bytes_tag),
       class = "yaplr_bad_argument", regexp = "^`description` must be valid text"),
  list(name = "send_objects() description with bytes encoding",
       call = function(ctx) send_objects(list(a = 1), description = bytes_tag),
       check = function(err, ctx) expect_false(does_object_exist("a")),
       class = "yaplr_bad_argument", regexp = "^`description` must be valid text"),
  list(name = "send_objects() NA description for one object",
       call = function(ctx) send_objects(list(a = 1), description = NA),
       class = "yaplr_bad_argument", regexp = "^`description` must be NULL or a single string, not `NA`\\.$"),
  list(name = "send_objects() three descriptions for two objects",
       call = function(ctx) send_objects(list(a = 1, b = 2), description = c("x", "y", "z")),
       class = "yaplr_bad_argument", regexp = "or a character vector of length 1 or 2, not a character vector of length 3\\.$"),
  list(name = "send_objects() a name too long",
       call = function(ctx) send_objects(setNames(list(1, 2), c("a", strrep("x", 2000)))),
       class = "yaplr_bad_tag", regexp = "^`names\\(objects\\)\\[2\\]` must be at most 1024 bytes long, not 2000 bytes\\.$"),
  list(name = "retrieve_objects() an NA tag",
       call = function(ctx) retrieve_objects(c("a", NA)),
       class = "yaplr_bad_tag", regexp = "^`tags\\[2\\]` must be a single non-empty string, not `NA_character_`\\.$"),
  list(name = "retrieve_objects() an empty tag",
       call = function(ctx) retrieve_objects(c("a", "b", "")),
       class = "yaplr_bad_tag", regexp = "^`tags\\[3\\]` must be a single non-empty string, not the string \"\"\\.$"),
  list(name = "retrieve_objects() a factor",
       call = function(ctx) retrieve_objects(factor("a")),
       class = "yaplr_bad_tag", regexp = "^`tags` must be a character vector, not a factor\\.$"),
  list(name = "save_objects() an NA tag",
       call = function(ctx) save_objects(tempfile(), tags = c(NA, "a")),
       class = "yaplr_bad_tag", regexp = "^`tags\\[1\\]` must be a single non-empty string"),
  list(name = "save_objects() into a directory",
       setup = a_dir,
       call = function(ctx) save_objects(ctx$d),
       check = function(err, ctx) expect_false(file.exists(paste0(ctx$d, ".yaplr-partial"))),
       class = "yaplr_bad_argument", regexp = "^`file` must be the path of a file, not of the directory \""),
  list(name = "save_objects() into a missing directory",
       setup = a_dir,
       call = function(ctx) save_objects(file.path(ctx$d, "no-such-dir", "dump")),
       class = "yaplr_bad_argument", regexp = "^the directory of `file`, \".*/no-such-dir\", does not exist; create it first or choose another path\\.$"),
  list(name = "save_objects() a file name that is not valid UTF-8",
       call = function(ctx) save_objects(paste0(tempdir(), "/\xff\xfe")),
       class = "yaplr_bad_argument", regexp = "^`file` must be valid text"),
  list(name = "an object whose class name is not valid UTF-8",
       call = function(ctx) {
         x <- structure(1, class = "caf\xe9")
         send_object(x, "odd-class")
         if (!identical(retrieve_object("odd-class"), x)) stop("a different value came back")
         if (!identical(object_info("odd-class")$class, "caf<e9>")) stop("class listed as ", object_info("odd-class")$class)
       },
       class = character(), regexp = ""),
  list(name = "load_objects() a directory",
       setup = a_dir,
       call = function(ctx) load_objects(ctx$d),
       class = "yaplr_bad_argument", regexp = "^`file` must be the path of a dump file, not of the directory \"")
)

bad_inputs <- c(bad_tag_cases, bad_timeout_cases, flag_cases, namespace_cases, new_api_cases,
                store_cases, space_cases, serialize_cases, corrupt_cases, journal_cases,
                path_cases, missing_cases, class_cases, more_cases)

# --- the runner ------------------------------------------------------------

# Every store a case used, checked at the end for files and helpers.
bad_input_stores <- new.env()
bad_input_stores$dirs <- character()

expect_store_works <- function() {
  value <- list(n = sample.int(1e6, 1L), x = runif(5), s = "round trip")
  send_object(value, "round-trip")
  expect_identical(retrieve_object("round-trip"), value)
  expect_identical(retrieve_object("round-trip", copy = TRUE), value)
  remove_object("round-trip")
}

expect_yaplr_error <- function(err, class, regexp) {
  if (length(class) == 0L) {
    # A call that must succeed.
    expect_identical(err, "no error", label = "the outcome")
    return(invisible())
  }
  expect_true(inherits(err, "condition"), label = "the call failed with a condition")
  if (!inherits(err, "condition")) return(invisible())
  got <- class(err)
  expect_true(got[1L] %in% class, label = paste("class", got[1L], "is one of", paste(class, collapse = ", ")))
  expect_identical(got[-1L], c("yaplr_error", "error", "condition"))
  expect_match(conditionMessage(err), regexp)
}

run_bad_input <- function(case) {
  test_that(paste("bad input:", case[["name"]]), {
    if (isTRUE(case[["root"]])) skip_if_not(is_root(), "needs root")
    env <- environment()
    dir <- local_store(env)
    ctx <- if (is.null(case[["setup"]])) list() else case[["setup"]](env)
    if (is.null(ctx$dir)) ctx$dir <- getOption("yaplr.dir")
    bad_input_stores$dirs <- c(bad_input_stores$dirs, dir, ctx$dir)
    err <- tryCatch({
      case[["call"]](ctx)
      "no error"
    }, error = function(e) e)
    if (!is.null(case[["after"]])) case[["after"]](ctx)
    # Whatever happened, the store keeps working.
    expect_store_works()
    bug <- case[["bug"]]
    if (nzchar(Sys.getenv("YAPLR_TEST_KNOWN_BUGS"))) bug <- NULL
    if (!is.null(bug) && !identical(case[["bug_in"]], "check")) skip(paste("known bug:", bug))
    expect_yaplr_error(err, case[["class"]], case[["regexp"]])
    if (!is.null(bug)) skip(paste("known bug:", bug))
    if (!is.null(case[["check"]])) case[["check"]](err, ctx)
  })
}

test_that("the table lists enough bad inputs", {
  expect_gte(length(bad_inputs), 40L)
  expect_false(anyDuplicated(vapply(bad_inputs, `[[`, "", "name")) > 0L)
})

for (case in bad_inputs) run_bad_input(case)

test_that("a foreign file with a wrong magic is ignored and removed with the store", {
  dir <- local_store()
  send_object("kept", "k")
  foreign <- file.path(dir, paste0(strrep("ab", 16), ".yobj"))
  write_bytes(foreign, c(charToRaw("NOTYAPLR"), as.raw(sample(0:255, 4000, TRUE))))
  kill_helper()
  expect_identical(rownames(list_objects()), "k")
  expect_identical(retrieve_object("k"), "kept")
  expect_store_works()
  expect_true(quit_server())
  expect_false(dir.exists(dir) && length(store_files(dir)) > 0L)
})

test_that("representative messages keep their wording", {
  dir <- local_store()
  f <- withr::local_tempfile()
  writeLines("x", f)
  expect_snapshot(error = TRUE, {
    send_object(1, "x", timeout = -1)
    list_objects(timeout = "10")
    retrieve_object("x", copy = "yes")
    make_sure_server_is_started(quiet = NA)
    send_object(1, "x", automatic_server_start = NA)
    does_object_exist(strrep("x", 5000))
    withr::with_options(list(yaplr.dir = c("a", "b")), store_dir())
  })
  expect_snapshot(error = TRUE, transform = function(x) gsub(f, "<file>", x, fixed = TRUE), {
    withr::with_options(list(yaplr.dir = f), send_object(1, "x"))
  })
  expect_snapshot(error = TRUE, transform = function(x) gsub(dir, "<store>", x, fixed = TRUE), {
    does_object_exist("x", automatic_server_start = FALSE)
  })
  send_object(dbl, "t")
  obj <- the_object_file(dir)
  write_bytes(obj, read_bytes(obj)[1:2100])
  # The expected size depends on the locale's name in the serialization header.
  expect_snapshot(error = TRUE, transform = function(x) sub("[0-9]+ expected", "<n> expected", x),
                  retrieve_object("t"))
  remove_object("t")
  expect_store_works()
})

test_that("a store path names its directory whatever its spelling", {
  dir <- local_store()
  with_dir(paste0(dir, "/"), {
    expect_identical(store_dir(), dir)
    send_object(1, "x")
  })
  with_dir(paste0("/", dir, "//./"), {
    expect_identical(store_dir(), dir)
    expect_identical(retrieve_object("x"), 1)
  })
  with_dir(file.path(dir, "no-such-dir", ".."), {
    expect_identical(store_dir(), dir)
    expect_true(does_object_exist("x"))
  })
  expect_false(dir.exists(file.path(dir, "no-such-dir")))
  # A relative store of a handle is fixed when the handle is made.
  wd <- withr::local_tempdir()
  h <- withr::with_dir(wd, yaplr_store(dir = "rel/"))
  expect_identical(attr(h, "dir"), file.path(normalizePath(wd), "rel"))
})

# Run R code as user nobody (uid 65534) with this yaplr; its stdout lines.
run_as_nobody <- function(code, args = character()) {
  skip_if_not(is_root(), "needs root")
  setpriv <- Sys.which("setpriv")
  skip_if(!nzchar(setpriv), "setpriv is missing")
  libs <- paste(c(dirname(find.package("yaplr")), .libPaths()), collapse = ":")
  out <- callr::run(setpriv,
    c("--reuid=65534", "--regid=65534", "--clear-groups", "env", paste0("R_LIBS=", libs),
      "HOME=/tmp", "TMPDIR=/tmp", file.path(R.home("bin"), "Rscript"), "--vanilla", "-e", code, args),
    error_on_status = FALSE, wd = "/", timeout = 60, stderr_to_stdout = TRUE
  )
  skip_if(out$status != 0L || !grepl("^ran\n", out$stdout),
          paste("nobody can not run R with yaplr:", out$stdout))
  strsplit(out$stdout, "\n", fixed = TRUE)[[1L]][-1L]
}

test_that("is_server_running() on a store of another user is a yaplr_store error", {
  skip_if_not(is_root(), "needs root")
  theirs <- tempfile("yaplr-root-", tmpdir = "/dev/shm")
  dir.create(theirs, mode = "0700")
  withr::defer(unlink(theirs, recursive = TRUE))
  got <- run_as_nobody(paste(
    'cat("ran\\n"); library(yaplr); options(yaplr.dir = commandArgs(TRUE)[1]);',
    'e <- tryCatch(is_server_running(), error = identity);',
    'cat(class(e), "\\n", conditionMessage(e), "\\n", sep = "")'
  ), theirs)
  expect_identical(got[1L], "yaplr_storeyaplr_errorerrorcondition")
  expect_match(got[2L], paste0("^the store directory \"", theirs, "\" belongs to uid 0, not to this user \\(uid 65534\\); choose a directory of your own with options\\(yaplr.dir = \\)$"))
  expect_identical(list.files(theirs, all.files = TRUE, no.. = TRUE), character())
})

test_that("messages about store paths, missing arguments and classes keep their wording", {
  dir <- local_store()
  default <- yaplr:::default_store_dir_()
  tr <- function(x) gsub(default, "<default store>", x, fixed = TRUE)
  expect_snapshot(error = TRUE, transform = tr, {
    with_dir("/", send_object(1, "x"))
    withr::with_envvar(c(HOME = "/"), with_dir("~", is_server_running()))
    with_dir("/usr/", store_dir())
  })
  shared <- shared_dir(environment())$shared
  expect_snapshot(error = TRUE, transform = function(x) gsub("[0-9]+\"$", "<uid>\"", gsub(shared, "<dir>", x, fixed = TRUE)), {
    with_dir(shared, send_object(1, "x"))
  })
  expect_snapshot(error = TRUE, {
    send_object(tag = "x")
    send_objects()
    retrieve_objects()
    resize_store()
    send_object(1, factor("a"))
    send_objects(data.frame(a = 1))
    send_object(1, "x", timeout = as.Date("2020-01-01"))
    retrieve_objects(c("a", NA))
    send_objects(list(a = 1), description = NA)
  })
  expect_store_works()
})

test_that("the bad inputs left no store files and no helper behind", {
  dirs <- unique(bad_input_stores$dirs)
  expect_gt(length(dirs), 0L)
  left <- dirs[dir.exists(dirs)]
  expect_identical(left, character())
  for (d in dirs) expect_identical(yaplrd_pids(d), integer(), label = d)
})
