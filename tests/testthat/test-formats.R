# Stores kept and dumps written by earlier versions of yaplr must open with
# this one. The fixtures were written by the version named in their names.

fixture_values <- function() {
  list(
    small = 1:10,
    vector = as.raw(0:255)[rep(1:256, 300)],
    `serialized-file` = as.list(as.character(1:3500)),
    over = "new"
  )
}

copy_fixture_store <- function(name, dir) {
  dir.create(dir, mode = "0700")
  src <- test_path("fixtures", name)
  ok <- file.copy(list.files(src, full.names = TRUE), dir)
  stopifnot(all(ok))
  Sys.chmod(list.files(dir, full.names = TRUE), "0600")
  invisible(dir)
}

check_fixture_store <- function(name) {
  dir <- local_store(parent.frame())
  copy_fixture_store(name, dir)
  want <- fixture_values()
  for (tag in names(want)) {
    expect_identical(retrieve_object(tag), want[[tag]], info = tag)
    expect_identical(retrieve_object(tag, copy = TRUE), want[[tag]], info = tag)
  }
  expect_identical(retrieve_object("list", namespace = "other"), list(a = "b", n = 3.5))
  expect_false(does_object_exist("removed"))
  expect_identical(object_info("small")$description, "ten integers")
  expect_identical(object_info("vector")$description, "raw 76800")
  # Stored as raw elements, but under 256 KiB: copied, not a view.
  expect_identical(object_info("vector")$storage, "file")
  expect_false(object_info("vector")$zero_copy)
  expect_setequal(list_objects(namespace = NULL)$tag,
                  c(names(want), "list"))
  res <- verify_objects()
  expect_true(all(res$ok))
  res
}

test_that("a store kept with journal format 3 (object files of format 2) opens with every object", {
  res <- check_fixture_store("journal-v3-store")
  # Object files written before checksums have none to check against; the
  # small objects got theirs when the journal was converted.
  files <- res$tag %in% c("vector", "serialized-file")
  expect_false(any(res$checked[files]))
  expect_true(all(res$checked[!files]))
})

test_that("a store kept with journal format 4 (object files of format 3) opens with every object", {
  res <- check_fixture_store("journal-v4-store")
  expect_true(all(res$checked))
})

check_fixture_dump <- function(file) {
  local_store(parent.frame())
  res <- load_objects(test_path("fixtures", file))
  expect_identical(nrow(res), 5L)
  want <- fixture_values()
  for (tag in names(want)) {
    expect_identical(retrieve_object(tag), want[[tag]], info = tag)
  }
  expect_identical(retrieve_object("list", namespace = "other"), list(a = "b", n = 3.5))
  expect_identical(object_info("small")$description, "ten integers")
}

test_that("a dump of format 1 loads with every object", {
  check_fixture_dump("dump-v1.ydump")
})

test_that("a dump of format 2 loads with every object", {
  check_fixture_dump("dump-v2.ydump")
})
