#!/bin/sh
# Prints, one per line, the files the tools service's image needs to give each run's /workspace
# its quota (ARCHITECTURE.md, "Workspace"): e2fsprogs' mke2fs (and /etc/mke2fs.conf), util-linux's
# mount, umount and losetup, and the shared libraries they load. Run it inside the root the files
# come from (build-bases.sh: the debootstrapped root, through chroot; deploy/docker/Dockerfile: the
# builder stage), and feed the list to `tar -c -T -`.
#
# Paths are resolved (/sbin/losetup -> /usr/sbin/losetup under usrmerge) so that they land in real
# folders of any base. glibc's own libraries are left out: the runtime base has them, and a libc
# from another build copied over its own could disagree with its loader.
set -eu
PATH=/usr/sbin:/usr/bin:/sbin:/bin
{
  for prog in mke2fs mount umount losetup; do
    p=$(command -v "$prog") || { echo "mount-tools.sh: no $prog here (install e2fsprogs and mount)" >&2; exit 1; }
    readlink -f "$p"
    for lib in $(ldd "$p" | awk '$2 == "=>" && $3 ~ /^\// {print $3}'); do
      case "${lib##*/}" in
        libc.so.*|libm.so.*|libdl.so.*|libpthread.so.*|librt.so.*|libresolv.so.*) continue ;;
      esac
      # The name the loader looks for (a symlink) in its resolved folder, and the file it names.
      printf '%s/%s\n' "$(readlink -f "${lib%/*}")" "${lib##*/}"
      readlink -f "$lib"
    done
  done
  echo /etc/mke2fs.conf
} | sort -u
