"""C kernels that ffspace builds on the user's machine at first use (`build.load_kernel`), from the sources shipped
here. Packages never carry compiled code: a kernel is this package's source compiled locally, and a model's
weights reach it as arrays."""
