//! Embedded EC2 instance-type catalog and on-demand prices.
//!
//! This crate owns the autoscaler's static knowledge about EC2 instance types:
//! the shape of each type (vCPUs, memory, GPUs, CPU architecture) and its
//! us-east-1 on-demand Linux price. Both tables are compiled into the binary
//! from CSV files under `data/` (regenerate them with `scripts/gen-catalog.py`)
//! and parsed lazily, once, on first use. The crate does no I/O and has no
//! dependencies besides `std`.
//!
//! Shapes come from moto's EC2 instance-type data (moto 5.2.5); prices from
//! AWS's July 2026 price list. EC2 Mac types are not included (they run macOS
//! and cannot be Kubernetes nodes), and some older families that still have
//! prices (for example `p2`, `p3`, `g3`, `g4ad`) are absent from moto's data
//! and so from [`lookup`].

use std::sync::OnceLock;

/// Instance shapes, one CSV row per type, sorted by instance type.
const INSTANCE_TYPES_CSV: &str = include_str!("../data/instance-types.csv");
/// us-east-1 on-demand Linux prices, one CSV row per type.
const PRICES_CSV: &str = include_str!("../data/on-demand-prices-us-east-1.csv");

const INSTANCE_TYPES_HEADER: &str =
    "instance_type,vcpus,memory_mib,gpus,gpu_manufacturer,gpu_model,gpu_memory_mib,arch";
const PRICES_HEADER: &str = "region,instance_type,on_demand_usd_per_hour";

/// CPU architecture of an instance type, as the `kubernetes.io/arch` node label
/// spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Arch {
    /// x86-64 (Intel and AMD); label value `amd64`.
    Amd64,
    /// 64-bit ARM (AWS Graviton); label value `arm64`.
    Arm64,
}

impl Arch {
    /// The value of the `kubernetes.io/arch` label for this architecture:
    /// `"amd64"` or `"arm64"`.
    pub fn label(&self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }

    fn from_label(label: &str) -> Option<Arch> {
        match label {
            "amd64" => Some(Arch::Amd64),
            "arm64" => Some(Arch::Arm64),
            _ => None,
        }
    }
}

/// The capacity of one EC2 instance type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstanceShape {
    /// The EC2 instance type name, for example `m5.large`.
    pub instance_type: &'static str,
    /// Default number of vCPUs.
    pub vcpus: u32,
    /// Memory in MiB, as EC2 reports it (before any kubelet or OS reservation).
    pub memory_mib: u64,
    /// Number of whole GPUs. Zero for types without GPUs, and also for
    /// fractional-GPU types (such as `g6f`), which have only a share of one GPU.
    pub gpus: u32,
    /// GPU manufacturer, for example `NVIDIA`; `None` if the type has no GPU.
    pub gpu_manufacturer: Option<&'static str>,
    /// GPU model, for example `V100` or `A10G`; `None` if the type has no GPU.
    pub gpu_model: Option<&'static str>,
    /// Total GPU memory of the instance in MiB (all GPUs, or the share of a
    /// fractional GPU); zero if the type has no GPU.
    pub gpu_memory_mib: u64,
    /// CPU architecture.
    pub arch: Arch,
}

/// Looks up the shape of an instance type by its exact name (for example
/// `m5.large`). Returns `None` for types the catalog does not know.
pub fn lookup(instance_type: &str) -> Option<&'static InstanceShape> {
    let shapes = all();
    shapes
        .binary_search_by(|shape| shape.instance_type.cmp(instance_type))
        .ok()
        .map(|index| &shapes[index])
}

/// Every instance type in the catalog, sorted by instance type name.
pub fn all() -> &'static [InstanceShape] {
    static SHAPES: OnceLock<Vec<InstanceShape>> = OnceLock::new();
    SHAPES.get_or_init(|| parse_shapes(INSTANCE_TYPES_CSV))
}

/// us-east-1 on-demand Linux price from the embedded July 2026 price list.
///
/// Returns the price in USD per instance-hour, or `None` if the type is not in
/// the price list. Prices in other regions differ by a few percent.
pub fn on_demand_price_usd_per_hour(instance_type: &str) -> Option<f64> {
    let prices = prices();
    prices
        .binary_search_by(|(name, _)| (*name).cmp(instance_type))
        .ok()
        .map(|index| prices[index].1)
}

/// The price table, sorted by instance type name.
fn prices() -> &'static [(&'static str, f64)] {
    static PRICES: OnceLock<Vec<(&'static str, f64)>> = OnceLock::new();
    PRICES.get_or_init(|| parse_prices(PRICES_CSV))
}

/// Splits embedded CSV text into data rows after checking its header. The data
/// contains no quoting, so a plain split on commas is exact.
fn data_rows(
    csv: &'static str,
    header: &str,
    file: &'static str,
) -> impl Iterator<Item = Vec<&'static str>> {
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some(header), "{file}: unexpected header");
    let columns = header.split(',').count();
    lines.filter(|line| !line.is_empty()).map(move |line| {
        let fields: Vec<&'static str> = line.split(',').collect();
        assert_eq!(fields.len(), columns, "{file}: malformed row {line:?}");
        fields
    })
}

fn parse_number<T: std::str::FromStr>(field: &str, file: &str, instance_type: &str) -> T {
    field
        .parse()
        .unwrap_or_else(|_| panic!("{file}: {instance_type}: bad number {field:?}"))
}

fn non_empty(field: &'static str) -> Option<&'static str> {
    (!field.is_empty()).then_some(field)
}

/// Parses the embedded instance-type table. Malformed data is a build defect
/// (the unit tests parse every row), so it panics rather than returning errors.
fn parse_shapes(csv: &'static str) -> Vec<InstanceShape> {
    const FILE: &str = "instance-types.csv";
    let mut shapes: Vec<InstanceShape> = data_rows(csv, INSTANCE_TYPES_HEADER, FILE)
        .map(|f| InstanceShape {
            instance_type: f[0],
            vcpus: parse_number(f[1], FILE, f[0]),
            memory_mib: parse_number(f[2], FILE, f[0]),
            gpus: parse_number(f[3], FILE, f[0]),
            gpu_manufacturer: non_empty(f[4]),
            gpu_model: non_empty(f[5]),
            gpu_memory_mib: parse_number(f[6], FILE, f[0]),
            arch: Arch::from_label(f[7])
                .unwrap_or_else(|| panic!("{FILE}: {}: bad arch {:?}", f[0], f[7])),
        })
        .collect();
    // The generator sorts already; sorting again keeps `lookup`'s binary search
    // correct even if the file is edited by hand.
    shapes.sort_unstable_by(|a, b| a.instance_type.cmp(b.instance_type));
    shapes
}

/// Parses the embedded price table into `(instance_type, usd_per_hour)` pairs
/// sorted by instance type.
fn parse_prices(csv: &'static str) -> Vec<(&'static str, f64)> {
    const FILE: &str = "on-demand-prices-us-east-1.csv";
    let mut prices: Vec<(&'static str, f64)> = data_rows(csv, PRICES_HEADER, FILE)
        .map(|f| (f[1], parse_number(f[2], FILE, f[1])))
        .collect();
    prices.sort_unstable_by(|a, b| a.0.cmp(b.0));
    prices
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csv_data_rows(csv: &str) -> usize {
        csv.lines().skip(1).filter(|line| !line.is_empty()).count()
    }

    #[test]
    fn m5_4xlarge_shape() {
        let shape = lookup("m5.4xlarge").expect("m5.4xlarge is in the catalog");
        assert_eq!(shape.instance_type, "m5.4xlarge");
        assert_eq!(shape.vcpus, 16);
        assert_eq!(shape.memory_mib, 65536);
        assert_eq!(shape.arch, Arch::Amd64);
        assert_eq!(shape.arch.label(), "amd64");
        assert_eq!(shape.gpus, 0);
        assert_eq!(shape.gpu_manufacturer, None);
        assert_eq!(shape.gpu_model, None);
        assert_eq!(shape.gpu_memory_mib, 0);
    }

    #[test]
    fn v100_gpus() {
        // moto's data has no p3.2xlarge (nor p3.8xlarge/p3.16xlarge); p3dn.24xlarge
        // is the V100 type it has.
        let shape = lookup("p3dn.24xlarge").expect("p3dn.24xlarge is in the catalog");
        assert_eq!(shape.gpus, 8);
        assert_eq!(shape.gpu_manufacturer, Some("NVIDIA"));
        assert_eq!(shape.gpu_model, Some("V100"));
        assert_eq!(shape.gpu_memory_mib, 8 * 32768);
        assert_eq!(shape.arch, Arch::Amd64);
    }

    #[test]
    fn single_gpu_types() {
        let g4dn = lookup("g4dn.xlarge").expect("g4dn.xlarge is in the catalog");
        assert_eq!(
            (g4dn.gpus, g4dn.gpu_manufacturer, g4dn.gpu_model),
            (1, Some("NVIDIA"), Some("T4"))
        );
        let g5 = lookup("g5.xlarge").expect("g5.xlarge is in the catalog");
        assert_eq!(g5.gpus, 1);
        assert_eq!(g5.gpu_manufacturer, Some("NVIDIA"));
        assert_eq!(g5.gpu_model, Some("A10G"));
        assert!(g5.gpu_memory_mib > 0);
    }

    #[test]
    fn fractional_gpu_types_have_no_whole_gpus() {
        let shape = lookup("g6f.large").expect("g6f.large is in the catalog");
        assert_eq!(shape.gpus, 0);
        assert_eq!(shape.gpu_model, Some("L4"));
        assert!(shape.gpu_memory_mib > 0);
    }

    #[test]
    fn graviton_is_arm64() {
        let shape = lookup("m6g.large").expect("m6g.large is in the catalog");
        assert_eq!(shape.arch, Arch::Arm64);
        assert_eq!(shape.arch.label(), "arm64");
        assert_eq!((shape.vcpus, shape.memory_mib), (2, 8192));
        assert_eq!(lookup("t4g.micro").map(|s| s.arch), Some(Arch::Arm64));
    }

    #[test]
    fn unknown_types_are_none() {
        assert_eq!(lookup("m5.huge"), None);
        assert_eq!(lookup(""), None);
        assert_eq!(lookup("M5.LARGE"), None);
        assert_eq!(on_demand_price_usd_per_hour("m5.huge"), None);
    }

    #[test]
    fn every_row_is_parsed() {
        let rows = csv_data_rows(INSTANCE_TYPES_CSV);
        assert!(rows > 1000, "only {rows} instance types");
        assert_eq!(all().len(), rows);
        assert_eq!(prices().len(), csv_data_rows(PRICES_CSV));
    }

    #[test]
    fn all_is_sorted_unique_and_sane() {
        for pair in all().windows(2) {
            assert!(pair[0].instance_type < pair[1].instance_type, "{pair:?}");
        }
        for shape in all() {
            assert!(shape.vcpus > 0 && shape.memory_mib > 0, "{shape:?}");
            assert_eq!(
                shape.gpu_manufacturer.is_some(),
                shape.gpu_model.is_some(),
                "{shape:?}"
            );
            if shape.gpus > 0 {
                assert!(
                    shape.gpu_model.is_some() && shape.gpu_memory_mib > 0,
                    "{shape:?}"
                );
            }
            assert_eq!(lookup(shape.instance_type), Some(shape));
        }
        assert!(lookup("mac2.metal").is_none(), "Mac types are excluded");
    }

    #[test]
    fn m5_large_price() {
        let price = on_demand_price_usd_per_hour("m5.large").expect("m5.large is priced");
        assert!(price > 0.0);
        assert!((price - 0.096).abs() < 1e-9, "m5.large costs {price}");
    }

    #[test]
    fn priced_catalog_types_have_positive_prices() {
        let mut priced = 0;
        for shape in all() {
            if let Some(price) = on_demand_price_usd_per_hour(shape.instance_type) {
                assert!(
                    price > 0.0 && price.is_finite(),
                    "{}: {price}",
                    shape.instance_type
                );
                priced += 1;
            }
        }
        assert!(priced > 1000, "only {priced} catalog types are priced");
        for (name, price) in prices() {
            assert!(*price > 0.0, "{name}: {price}");
        }
    }
}
