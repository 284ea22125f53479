test_that("a store handle reads, writes, removes and lists with R's verbs", {
  dir <- local_store()
  s <- yaplr_store(namespace = "app1")
  expect_s3_class(s, "yaplr_handle")
  expect_identical(length(s), 0L)
  s$x <- 1:10
  s[["y"]] <- list(a = "b")
  expect_identical(s$x, 1:10)
  expect_identical(s[["y"]], list(a = "b"))
  expect_identical(names(s), c("x", "y"))
  expect_true("x" %in% names(s))
  expect_identical(length(s), 2L)
  expect_identical(as.list(s), list(x = 1:10, y = list(a = "b")))
  expect_output(print(s), "namespace \"app1\"")
  expect_output(print(s), "x")
  # Objects live in the handle's namespace only.
  expect_false(does_object_exist("x"))
  expect_identical(retrieve_object("x", namespace = "app1"), 1:10)
  s$x <- NULL
  expect_identical(names(s), "y")
  expect_error(s$x, class = "yaplr_not_found")
  expect_error(s[["nope"]], class = "yaplr_not_found")
  # The handle is tied to its store, whatever the session's option says.
  withr::with_options(list(yaplr.dir = tempfile()), {
    expect_identical(s$y, list(a = "b"))
  })
  # It survives serialization and works in another process.
  got <- callr::r(function(s) {
    library(yaplr)
    s$z <- "from the other side"
    s$y
  }, list(s = s))
  expect_identical(got, list(a = "b"))
  expect_identical(s$z, "from the other side")
  expect_output(print(yaplr_store(namespace = "empty")), "no objects")
  expect_error(yaplr_store(namespace = NA), class = "yaplr_bad_argument")
})
