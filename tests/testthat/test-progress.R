# Progress bars of long transfers (cli's "logger" handler writes each event
# of a bar as a line, so the tests can see them).

# The bar events of `expr`, with options(yaplr.progress = progress).
progress_events <- function(expr, progress = 0) {
  withr::local_options(cli.progress_handlers_only = "logger", yaplr.progress = progress)
  out <- capture.output(invisible(force(expr)))
  sub("^\\S+ \\S+ ", "", out)
}

test_that("options(yaplr.progress = ) gives the delay before a bar appears", {
  withr::local_options(yaplr.progress = NULL)
  expect_identical(yaplr:::progress_delay(), if (interactive()) 2 else -1)
  withr::local_options(yaplr.progress = TRUE)
  expect_identical(yaplr:::progress_delay(), 2)
  withr::local_options(yaplr.progress = FALSE)
  expect_identical(yaplr:::progress_delay(), -1)
  withr::local_options(yaplr.progress = 0.5)
  expect_identical(yaplr:::progress_delay(), 0.5)
  withr::local_options(yaplr.progress = "yes")
  expect_identical(yaplr:::progress_delay(), -1)
})

test_that("a long transfer shows a progress bar with cli when asked", {
  skip_if_not_installed("cli")
  local_store()
  x <- runif(2e6) # 16 MB
  sent <- progress_events(send_object(x, "x"))
  # The bar knows the total: 16 MB.
  expect_true(any(grepl("^0/1.6e\\+07 created$", sent)), info = paste(sent, collapse = "\n"))
  expect_true(any(grepl("^[0-9]+/1.6e\\+07 updated$", sent)))
  expect_true(any(grepl("terminated", sent)))
  expect_identical(retrieve_object("x"), x)
  copied <- progress_events(y <- retrieve_object("x", copy = TRUE))
  expect_identical(y, x)
  expect_true(any(grepl("created", copied)))
  expect_true(any(grepl("terminated", copied)))
  l <- list(a = x)
  listed <- progress_events(send_object(l, "l"))
  # R serialization: the total is not known in advance.
  expect_true(any(grepl("^0/NA created$", listed)), info = paste(listed, collapse = "\n"))
  expect_true(any(grepl("terminated", listed)))
  read <- progress_events(z <- retrieve_object("l"))
  expect_true(any(grepl("terminated", read)))
  expect_identical(z, l)
  several <- progress_events(send_objects(list(a = x, b = l)))
  expect_true(any(grepl("created", several)))
  expect_identical(retrieve_objects(c("a", "b")), list(a = x, b = l))
})

test_that("no bar for a small object, for a view, or by default outside an interactive session", {
  skip_if_not_installed("cli")
  local_store()
  # Under 4 MB, the Rust layer never calls R at all.
  expect_identical(progress_events(send_object(runif(4e5), "small")), character())
  expect_identical(progress_events(retrieve_object("small", copy = TRUE)), character())
  x <- runif(2e6)
  send_object(x, "x")
  expect_identical(progress_events(v <- retrieve_object("x")), character())
  expect_identical(v, x)
  skip_if(interactive())
  expect_identical(progress_events(send_object(x, "x"), progress = NULL), character())
  expect_identical(progress_events(retrieve_object("x", copy = TRUE), progress = NULL), character())
})
