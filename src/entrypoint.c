// Routine registration is forwarded to the Rust static library, which
// also keeps the linker from dropping it.
void R_init_yaplr_extendr(void *dll);

void R_init_yaplr(void *dll) {
    R_init_yaplr_extendr(dll);
}
