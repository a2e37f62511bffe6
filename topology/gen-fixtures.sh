#!/bin/sh
# Regenerate the hwloc XML topology fixtures in this directory.
# Needs the hwloc 2.x command-line tools (Debian 12: `apt-get install -y hwloc`,
# made with hwloc 2.9.0). Only lstopo-no-graphics, hwloc-annotate, sed and awk
# are used. See README.md for what each file models.
#
# Usage: sh gen-fixtures.sh           (rewrites the synthetic fixtures)
#        sh gen-fixtures.sh --with-vm (also re-exports this machine as vm-2c.xml)
set -eu
cd "$(dirname "$0")"
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT

LSTOPO=lstopo-no-graphics
L1='l1d:1(size=32KiB) l1i:1(size=32KiB)'

# pkg_info FILE MODEL FAMILY MODELNUMBER VENDOR: CPU info attributes on every package,
# as the Linux backend puts them there.
pkg_info() {
  hwloc-annotate "$1" "$1" package:all info CPUVendor "$5"
  hwloc-annotate "$1" "$1" package:all info CPUFamilyNumber "$3"
  hwloc-annotate "$1" "$1" package:all info CPUModelNumber "$4"
  hwloc-annotate "$1" "$1" package:all info CPUModel "$2"
}

# numa_latency FILE N V1 V2 ...: NUMA distance matrix (ACPI SLIT values), kind 5 =
# HWLOC_DISTANCES_KIND_FROM_OS|HWLOC_DISTANCES_KIND_MEANS_LATENCY, named NUMALatency
# like the Linux backend does.
numa_latency() {
  f=$1; n=$2; shift 2
  {
    echo name=NUMALatency
    echo 5
    echo "$n"
    i=0; while [ "$i" -lt "$n" ]; do echo "NUMANode:$i"; i=$((i+1)); done
    for v in "$@"; do echo "$v"; done
  } > "$T/dist.txt"
  hwloc-annotate "$f" "$f" root distances "$T/dist.txt"
}

# 1. Desktop: Intel Core i7-9700 (Coffee Lake), 8 cores, no SMT, 32 GiB, one NUMA node.
S1="pack:1 [numa(memory=32GiB)] l3:1(size=12MiB) l2:8(size=256KiB) $L1 core:1 pu:1"
$LSTOPO --input "$S1" --of xml -f "$T/desktop.xml"
pkg_info "$T/desktop.xml" "Intel(R) Core(TM) i7-9700 CPU @ 3.00GHz" 6 158 GenuineIntel
cp "$T/desktop.xml" desktop-1s-8c-nosmt.xml

# 2. 2x Intel Xeon Gold 6226R (Cascade Lake): 2 packages x 16 cores x 2 threads,
#    one NUMA node (192 GiB) per package. Linux numbering: PU P#n and P#n+32 are SMT
#    siblings; package 0 = PUs 0-15,32-47, package 1 = PUs 16-31,48-63.
#    Core os_index restarts at 0 in each package (Linux core_id is per package).
CORES16="0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15"
S2="pack:2 [numa(memory=192GiB)] l3:1(size=22MiB) l2:16(size=1MiB) $L1 core:1(indexes=$CORES16,$CORES16) pu:2(indexes=Core)"
$LSTOPO --input "$S2" --of xml -f "$T/intel.xml"
pkg_info "$T/intel.xml" "Intel(R) Xeon(R) Gold 6226R CPU @ 2.90GHz" 6 85 GenuineIntel
numa_latency "$T/intel.xml" 2 10 21 21 10
cp "$T/intel.xml" intel-2s-16c-smt.xml

# 3. 2x AMD EPYC 7452 (Rome, 32 cores) in NPS4: per package 4 NUMA nodes (64 GiB
#    each), each node = 1 CCD = 2 CCX (L3 16 MiB) x 4 cores x 2 threads.
#    hwloc represents the node's CPU side as a Group0 (as on real NPS4 machines).
#    Linux numbering: PUs 0-63 are the first threads of cores 0-63 (package 0 =
#    0-31), PU n+64 is the SMT sibling of PU n; node k = PUs 8k..8k+7 and 64+8k..64+8k+7.
CORES32="0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31"
S3="pack:2 group:4 [numa(memory=64GiB)] l3:2(size=16MiB) l2:4(size=512KiB) $L1 core:1(indexes=$CORES32,$CORES32) pu:2(indexes=Core)"
$LSTOPO --input "$S3" --of xml -f "$T/amd.xml"
pkg_info "$T/amd.xml" "AMD EPYC 7452 32-Core Processor" 23 49 AuthenticAMD
numa_latency "$T/amd.xml" 8 \
  10 12 12 12 32 32 32 32 \
  12 10 12 12 32 32 32 32 \
  12 12 10 12 32 32 32 32 \
  12 12 12 10 32 32 32 32 \
  32 32 32 32 10 12 12 12 \
  32 32 32 32 12 10 12 12 \
  32 32 32 32 12 12 10 12 \
  32 32 32 32 12 12 12 10
cp "$T/amd.xml" amd-epyc-2s-nps4.xml

# 4. 2x Intel Xeon Silver 4110: 2 packages x 8 cores x 2 threads, 2 NUMA nodes (48 GiB
#    each), Linux numbering (package 0 = PUs 0-7,16-23; package 1 = 8-15,24-31).
#    - PUs 15 and 31 (the last core of package 1) are offline: removed with
#      --restrict, then the root complete_cpuset is set back to all 32 PUs with sed
#      (the Linux backend reports offline CPUs only in the root complete_cpuset).
#    - the process cpuset (cgroup) allows only PUs 2-12,18-27 (0x0ffc1ffc), set with
#      --allow: PUs 0,1,16,17 (node 0) and 13,14,28,29,30 (node 1) are disallowed,
#      core P#4 of package 1 has only PU 12 allowed (its sibling 28 is not).
CORES8="0,1,2,3,4,5,6,7"
S4="pack:2 [numa(memory=48GiB)] l3:1(size=11MiB) l2:8(size=1MiB) $L1 core:1(indexes=$CORES8,$CORES8) pu:2(indexes=Core)"
$LSTOPO --input "$S4" --restrict 0x7fff7fff --of xml -f "$T/r1.xml"
sed '0,/ complete_cpuset="0x7fff7fff"/s// complete_cpuset="0xffffffff"/' "$T/r1.xml" > "$T/r2.xml"
$LSTOPO --input "$T/r2.xml" --allow 0x0ffc1ffc --of xml -f "$T/r3.xml"
pkg_info "$T/r3.xml" "Intel(R) Xeon(R) Silver 4110 CPU @ 2.10GHz" 6 85 GenuineIntel
hwloc-annotate "$T/r3.xml" "$T/r3.xml" root info LinuxCgroup /system.slice/arctic-proxy.service
numa_latency "$T/r3.xml" 2 10 21 21 10
cp "$T/r3.xml" restricted-cpuset.xml

# 5. intel-2s-16c-smt.xml plus PCI/OS devices, written by hand (synthetic descriptions
#    cannot carry I/O objects) and inserted as I/O children of the packages:
#    - package 0 / NUMA node 0: Intel I350 on-board NIC 0000:03:00.0 -> "eno1"
#    - package 1 / NUMA node 1: Intel X710 dual port 0000:d8:00.0/.1 -> "ens1f0"/"ens1f1"
#    then re-exported by lstopo (--whole-io keeps every I/O object) so hwloc itself
#    validates and normalises the XML.
cat > "$T/io0.xml" <<'EOF'
      <object type="Bridge" bridge_type="0-1" depth="0" bridge_pci="0000:[00-03]">
        <object type="Bridge" bridge_type="1-1" depth="1" bridge_pci="0000:[03-03]" pci_busid="0000:00:1c.0" pci_type="0604 [8086:a190] [15d9:095d] f9" pci_link_speed="2.000000">
          <info name="PCIVendor" value="Intel Corporation"/>
          <info name="PCIDevice" value="C620 Series Chipset Family PCI Express Root Port #1"/>
          <object type="PCIDev" pci_busid="0000:03:00.0" pci_type="0200 [8086:1521] [15d9:1521] 01" pci_link_speed="2.000000">
            <info name="PCIVendor" value="Intel Corporation"/>
            <info name="PCIDevice" value="I350 Gigabit Network Connection"/>
            <object type="OSDev" name="eno1" osdev_type="2">
              <info name="Address" value="ac:1f:6b:00:00:10"/>
            </object>
          </object>
        </object>
      </object>
EOF
cat > "$T/io1.xml" <<'EOF'
      <object type="Bridge" bridge_type="0-1" depth="0" bridge_pci="0000:[d7-d8]">
        <object type="Bridge" bridge_type="1-1" depth="1" bridge_pci="0000:[d8-d8]" pci_busid="0000:d7:00.0" pci_type="0604 [8086:2030] [15d9:095d] 07" pci_link_speed="7.876923">
          <info name="PCIVendor" value="Intel Corporation"/>
          <info name="PCIDevice" value="Sky Lake-E PCI Express Root Port A"/>
          <object type="PCIDev" pci_busid="0000:d8:00.0" pci_type="0200 [8086:1572] [8086:0006] 02" pci_link_speed="7.876923">
            <info name="PCIVendor" value="Intel Corporation"/>
            <info name="PCIDevice" value="Ethernet Controller X710 for 10GbE SFP+"/>
            <object type="OSDev" name="ens1f0" osdev_type="2">
              <info name="Address" value="3c:fd:fe:00:00:a0"/>
            </object>
          </object>
          <object type="PCIDev" pci_busid="0000:d8:00.1" pci_type="0200 [8086:1572] [8086:0006] 02" pci_link_speed="7.876923">
            <info name="PCIVendor" value="Intel Corporation"/>
            <info name="PCIDevice" value="Ethernet Controller X710 for 10GbE SFP+"/>
            <object type="OSDev" name="ens1f1" osdev_type="2">
              <info name="Address" value="3c:fd:fe:00:00:a1"/>
            </object>
          </object>
        </object>
      </object>
EOF
# insert each fragment just before the closing tag of the matching Package
awk -v f0="$T/io0.xml" -v f1="$T/io1.xml" '
  /^    <object type="Package" os_index="0"/ { frag = f0 }
  /^    <object type="Package" os_index="1"/ { frag = f1 }
  frag != "" && $0 == "    </object>" {
    while ((getline line < frag) > 0) print line
    close(frag); frag = ""
  }
  { print }' intel-2s-16c-smt.xml > "$T/nic-hand.xml"
$LSTOPO --input "$T/nic-hand.xml" --whole-io --of xml -f "$T/nic.xml"
cp "$T/nic.xml" intel-2s-nic.xml

# 6. This VM, exported as is (only when asked: the result depends on the machine).
if [ "${1:-}" = "--with-vm" ]; then
  $LSTOPO --of xml -f vm-2c.xml
fi
