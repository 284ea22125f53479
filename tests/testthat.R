library(testthat)
library(yaplr)

test_check("yaplr")
