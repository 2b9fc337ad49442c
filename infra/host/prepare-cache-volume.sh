#!/usr/bin/env bash
# Prepare the persistent EBS cache volume of a vLLM endpoint instance and mount it.
#
# Run as root by cloud-init at EVERY boot of the instance (first boot, reboots, and the first boot
# of a replacement instance that re-attaches the same volume). Safe to run any number of times:
# it formats only a device that holds nothing at all, and never touches one that holds data.
#
# Inputs (environment variables; boot.sh passes those of boot.env, which infra/render/userdata.py
# renders from infra/catalog/names.py):
#   CACHE_VOLUME_ID       required. The EBS volume id, e.g. vol-0123456789abcdef0.
#   CACHE_MOUNT_POINT     required. Where to mount it.
#   CACHE_SUBDIRS         required. The folders the containers bind-mount, one name per line.
#   CACHE_WAIT_SECONDS    required. How long to wait for the device to appear.
#   CACHE_DEVICE_DIR      where the udev by-id links live. Default /dev/disk/by-id.
#   CACHE_FSTAB           the fstab to record the mount in. Default /etc/fstab.
#   CACHE_OWNER           optional user[:group] owning the container subdirectories. Default root:root.
#   DEPLOY_TIMELINE_FILE  optional. When set, "cache_volume_mounted <epoch seconds>" is appended
#                         once the volume is mounted and the subdirectories exist.
#
# Outputs: the volume mounted at CACHE_MOUNT_POINT, one fstab entry for it (by UUID, nofail), and
# the subdirectories CACHE_SUBDIRS on it.
# Exit status: 0 when mounted; non-zero, with the reason on stderr, otherwise.
set -euo pipefail

readonly PROG=prepare-cache-volume
readonly FS_TYPE=ext4
readonly FS_LABEL=vllm-cache
# How long systemd waits for the device at boot before giving up on the (nofail) mount. The
# volume stays attached across stop/start and reboots, so at those boots it is there at once.
readonly DEVICE_TIMEOUT=30s
readonly POLL_SECONDS=1
readonly PROGRESS_EVERY=10

log() { printf '%s: %s\n' "$PROG" "$*"; }
die() { printf '%s: ERROR: %s\n' "$PROG" "$*" >&2; exit 1; }

missing="is not set (boot.sh passes it from boot.env)"
: "${CACHE_VOLUME_ID:?$missing}" "${CACHE_MOUNT_POINT:?$missing}" "${CACHE_SUBDIRS:?$missing}" \
  "${CACHE_WAIT_SECONDS:?$missing}"
CACHE_DEVICE_DIR=${CACHE_DEVICE_DIR:-/dev/disk/by-id}
CACHE_FSTAB=${CACHE_FSTAB:-/etc/fstab}
CACHE_OWNER=${CACHE_OWNER:-root:root}
DEPLOY_TIMELINE_FILE=${DEPLOY_TIMELINE_FILE:-}

[[ $(id -u) -eq 0 ]] || die "must run as root"
[[ $CACHE_VOLUME_ID =~ ^vol-[0-9a-f]{8,17}$ ]] \
  || die "CACHE_VOLUME_ID must look like vol-0123456789abcdef0, got '${CACHE_VOLUME_ID}'"
[[ $CACHE_WAIT_SECONDS =~ ^[0-9]+$ ]] || die "CACHE_WAIT_SECONDS must be a whole number of seconds"
# fstab separates fields by whitespace; an absolute path without any keeps the entry unambiguous.
[[ $CACHE_MOUNT_POINT == /* && $CACHE_MOUNT_POINT != *[[:space:]]* && $CACHE_MOUNT_POINT != / ]] \
  || die "CACHE_MOUNT_POINT must be an absolute path without whitespace (and not /): '${CACHE_MOUNT_POINT}'"
CACHE_MOUNT_POINT=${CACHE_MOUNT_POINT%/}
mapfile -t SUBDIRS <<<"$CACHE_SUBDIRS"
for sub in "${SUBDIRS[@]}"; do
  # Names directly below the mount point: nothing may land beside or above the volume.
  [[ -n $sub && $sub != . && $sub != .. && $sub != */* ]] || die "CACHE_SUBDIRS holds '${sub}', not a folder name"
done
readonly SUBDIRS

# A Nitro instance presents an EBS volume as an NVMe device whose serial is the volume id without
# its dash; udev names the by-id link after that serial.
link="${CACHE_DEVICE_DIR}/nvme-Amazon_Elastic_Block_Store_${CACHE_VOLUME_ID/-/}"

# The attachment is created only after the instance is running, so the device may appear late.
wait_for_device() {
  local start now waited last_report=-1
  start=$(date +%s)
  while [[ ! -e $link ]]; do
    now=$(date +%s)
    waited=$((now - start))
    if ((waited >= CACHE_WAIT_SECONDS)); then
      die "volume ${CACHE_VOLUME_ID} did not appear at ${link} within ${CACHE_WAIT_SECONDS} s" \
          "(is it attached to this instance?); the cache is NOT mounted"
    fi
    if ((last_report < 0 || waited - last_report >= PROGRESS_EVERY)); then
      log "waiting for volume ${CACHE_VOLUME_ID} at ${link} (${waited}/${CACHE_WAIT_SECONDS} s)"
      last_report=$waited
    fi
    sleep "$POLL_SECONDS"
  done
}

# Prints the filesystem type of an existing, expected filesystem; prints nothing for an empty
# device; fails for anything else (a partition table, another filesystem, several signatures).
probe_device() {
  local device=$1 out rc=0
  # -p probes the device itself rather than the blkid cache, which may be stale or absent at boot.
  out=$(blkid -p -o export -- "$device") || rc=$?
  case $rc in
    0) ;;
    2)
      # No signature. A new EBS volume reads as zeros; anything else (a damaged filesystem, an
      # encrypted or raw-written device) may be someone's data, so it is not formatted either.
      cmp -s -n 1048576 -- "$device" /dev/zero \
        || die "${device} (volume ${CACHE_VOLUME_ID}) has no filesystem signature but is not blank; refusing to format it"
      return 0
      ;;
    8) die "${device} (volume ${CACHE_VOLUME_ID}) has several conflicting signatures; refusing to touch it" ;;
    *) die "blkid failed on ${device} (exit ${rc})" ;;
  esac
  local type="" pttype=""
  while IFS='=' read -r key value; do
    case $key in
      TYPE) type=$value ;;
      PTTYPE) pttype=$value ;;
    esac
  done <<<"$out"
  [[ -z $pttype ]] \
    || die "${device} (volume ${CACHE_VOLUME_ID}) holds a ${pttype} partition table; refusing to format or mount it"
  [[ $type == "$FS_TYPE" ]] \
    || die "${device} (volume ${CACHE_VOLUME_ID}) holds '${type:-an unknown signature}', expected ${FS_TYPE} or nothing; refusing to format or mount it"
  printf '%s\n' "$type"
}

# Writes `line` as the only entry for the mount point (and for the UUID), keeping everything else.
update_fstab() {
  local uuid=$1 line=$2 dir tmp
  dir=$(dirname -- "$CACHE_FSTAB")
  [[ -e $CACHE_FSTAB ]] || : >"$CACHE_FSTAB"
  tmp=$(mktemp "${dir}/.fstab.XXXXXX")
  # Drops old entries for this mount point (e.g. from a volume that was replaced) and any other
  # entry for this UUID, then appends ours. Comments and unrelated entries are kept as they are.
  awk -v mp="$CACHE_MOUNT_POINT" -v id="UUID=${uuid}" '
    /^[[:space:]]*(#|$)/ { print; next }
    { target = $2; sub(/\/+$/, "", target) }
    target == mp || $1 == id { next }
    { print }
  ' "$CACHE_FSTAB" >"$tmp"
  printf '%s\n' "$line" >>"$tmp"
  if cmp -s "$tmp" "$CACHE_FSTAB"; then
    rm -f -- "$tmp"
    log "fstab ${CACHE_FSTAB} already has the entry"
    return 0
  fi
  chmod --reference="$CACHE_FSTAB" -- "$tmp"
  mv -f -- "$tmp" "$CACHE_FSTAB"
  log "fstab ${CACHE_FSTAB}: ${line}"
  # systemd builds mount units from /etc/fstab; keep its view current when that is the file changed.
  if [[ $CACHE_FSTAB == /etc/fstab && -d /run/systemd/system ]]; then
    systemctl daemon-reload || log "warning: systemctl daemon-reload failed"
  fi
}

wait_for_device
device=$(readlink -f -- "$link")
[[ -b $device ]] || die "${link} resolves to ${device}, which is not a block device"
log "volume ${CACHE_VOLUME_ID} is ${device}"

fs_type=$(probe_device "$device")
if [[ -z $fs_type ]]; then
  log "${device} is empty: creating an ${FS_TYPE} filesystem labelled ${FS_LABEL}"
  # nodiscard: a new EBS volume has nothing to discard, and discarding a large one takes minutes.
  # -m 0: the volume only holds caches, so no blocks are held back for root.
  mkfs.ext4 -q -L "$FS_LABEL" -m 0 -E nodiscard -- "$device"
  fs_type=$(probe_device "$device")
  [[ $fs_type == "$FS_TYPE" ]] || die "mkfs.${FS_TYPE} on ${device} left no ${FS_TYPE} filesystem"
else
  log "${device} already holds an ${fs_type} filesystem: keeping it"
fi
uuid=$(blkid -p -o value -s UUID -- "$device")
[[ -n $uuid ]] || die "no filesystem UUID on ${device}"

mkdir -p -- "$CACHE_MOUNT_POINT"
device_majmin=$(lsblk -dn -o MAJ:MIN -- "$device" | tr -d '[:space:]')
mounted_majmin=$(findmnt -n -o MAJ:MIN --mountpoint "$CACHE_MOUNT_POINT" | tr -d '[:space:]' || true)
if [[ -z $mounted_majmin ]]; then
  mount -t "$FS_TYPE" -o noatime -- "$device" "$CACHE_MOUNT_POINT"
  log "mounted ${device} at ${CACHE_MOUNT_POINT}"
elif [[ $mounted_majmin == "$device_majmin" ]]; then
  log "${device} is already mounted at ${CACHE_MOUNT_POINT}"
else
  die "${CACHE_MOUNT_POINT} already has another filesystem mounted (device ${mounted_majmin}); not mounting ${device} over it"
fi
# Anything below must land on the volume, never on the root disk underneath the mount point.
mountpoint -q -- "$CACHE_MOUNT_POINT" || die "${CACHE_MOUNT_POINT} is not a mount point after mounting"

update_fstab "$uuid" \
  "UUID=${uuid} ${CACHE_MOUNT_POINT} ${FS_TYPE} defaults,noatime,nofail,x-systemd.device-timeout=${DEVICE_TIMEOUT} 0 2"

# Created only now, on the mounted volume: when the volume is missing these paths do not exist,
# so a container bind-mounting them fails to start instead of filling the root disk.
chmod 0755 -- "$CACHE_MOUNT_POINT"
for sub in "${SUBDIRS[@]}"; do
  install -d -m 0755 -- "${CACHE_MOUNT_POINT}/${sub}"
  chown -- "$CACHE_OWNER" "${CACHE_MOUNT_POINT}/${sub}"
  # install -d leaves the mode of an existing directory alone; never leave one world-writable.
  chmod go-w -- "${CACHE_MOUNT_POINT}/${sub}"
done
log "ready: ${CACHE_MOUNT_POINT} (${SUBDIRS[*]})"

if [[ -n $DEPLOY_TIMELINE_FILE ]]; then
  printf 'cache_volume_mounted %s\n' "$(date +%s.%N)" >>"$DEPLOY_TIMELINE_FILE"
fi
