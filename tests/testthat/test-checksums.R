# Every payload carries a checksum written with it: damage is an error
# naming the tag, never a silently different value.

poke_bytes <- function(f, at, bytes) {
  con <- file(f, "r+b")
  on.exit(close(con))
  seek(con, at, rw = "write")
  writeBin(as.raw(bytes), con)
}

# Where `pattern` (raw) starts in file `f`, 0-based.
find_bytes <- function(f, pattern) {
  b <- readBin(f, "raw", file.size(f))
  n <- length(pattern)
  for (i in which(b == pattern[1L])) {
    if (i + n - 1L <= length(b) && identical(b[i:(i + n - 1L)], pattern)) return(i - 1L)
  }
  NA_integer_
}

test_that("verify_objects() passes an intact store and names damaged objects", {
  dir <- local_store()
  send_object(runif(1e5), "big")                    # a zero-copy vector file
  send_object(as.list(1:2e4), "serialized")          # a serialized file
  marker <- "a-unique-marker-for-the-journal"
  send_object(marker, "small", namespace = "other")  # inline, in the journal
  res <- verify_objects()
  expect_identical(nrow(res), 3L)
  expect_true(all(res$ok))
  expect_true(all(res$checked))

  f <- object_headers(dir)
  big <- f$file[f$tag == "big"]
  poke_bytes(big, 2048 + 64 + 4000, rep(0xff, 8))
  err <- expect_error(verify_objects(), class = "yaplr_corrupt")
  expect_identical(err$tag, "big")
  expect_match(conditionMessage(err), "1 of 3 stored objects are damaged: \"big\"")
  expect_identical(err$damaged$tag, "big")
  # A copying retrieve checks too; a zero-copy view is not read, not checked.
  expect_error(retrieve_object("big", copy = TRUE), class = "yaplr_corrupt")
  expect_length(retrieve_object("big"), 1e5)
  expect_true(verify_objects(namespace = "other")$ok)

  # A small object is read from the store's index, where its checksum
  # travels with it.
  at <- find_bytes(file.path(dir, "index"), charToRaw(marker))
  expect_false(is.na(at))
  poke_bytes(file.path(dir, "index"), at + 3, charToRaw("X"))
  err <- expect_error(retrieve_object("small", namespace = "other"), class = "yaplr_corrupt")
  expect_match(conditionMessage(err), "\"small\"")
  err <- expect_error(verify_objects(namespace = "other"), class = "yaplr_corrupt")
  expect_identical(err$tag, "small")
  remove_object("big")
  remove_object("small", namespace = "other")
  expect_true(all(verify_objects()$ok))
})
