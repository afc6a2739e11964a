/*
 * dl.h - what the run-time loaded libraries (cuda_shim.c, cufile_shim.c)
 * share: opening a library and saying why it could not be opened.
 */
#ifndef MEGAIO_DL_H
#define MEGAIO_DL_H

#include <dlfcn.h>
#include <stdio.h>

/* dlopen(libname) for local use; on failure NULL, with dlerror's text in
 * err. */
static inline void *megaio_dlopen(const char *libname, char *err, size_t errlen)
{
	void *lib = dlopen(libname, RTLD_NOW | RTLD_LOCAL);
	if (!lib) {
		const char *e = dlerror();
		snprintf(err, errlen, "%s", e ? e : "dlopen failed");
	}
	return lib;
}

#endif
