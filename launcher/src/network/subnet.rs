//! IPv4 subnets as the network step hands them out: `10.89.0.0/16`.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// An IPv4 network: its first address and prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    pub network: Ipv4Addr,
    pub prefix: u8,
}

impl Subnet {
    /// `addr/prefix` with the host bits cleared.
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Option<Self> {
        (prefix <= 32).then(|| Self {
            network: Ipv4Addr::from(u32::from(addr) & mask(prefix)),
            prefix,
        })
    }

    /// How many addresses it spans.
    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix))
    }

    /// The `n`th address, counting the network address as 0.
    pub fn nth(&self, n: u64) -> Option<Ipv4Addr> {
        (n < self.size()).then(|| Ipv4Addr::from(u32::from(self.network) + n as u32))
    }

    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        u32::from(addr) & mask(self.prefix) == u32::from(self.network)
    }

    /// The first host address: the bridge's, and the containers' gateway.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }
}

fn mask(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl FromStr for Subnet {
    type Err = &'static str;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = s.split_once('/').ok_or("expected ADDRESS/PREFIX")?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| "not an IPv4 address")?;
        let prefix: u8 = prefix.parse().map_err(|_| "prefix is not a number")?;
        Self::new(addr, prefix).ok_or("prefix is over 32")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_masks_host_bits() {
        let s: Subnet = "10.89.3.7/16".parse().unwrap();
        assert_eq!(s.to_string(), "10.89.0.0/16");
        assert_eq!(s.size(), 65536);
        assert_eq!(s.gateway(), Ipv4Addr::new(10, 89, 0, 1));
        assert_eq!(s.nth(258), Some(Ipv4Addr::new(10, 89, 1, 2)));
        assert_eq!(s.nth(65536), None);
        assert!(
            s.contains(Ipv4Addr::new(10, 89, 255, 255)) && !s.contains(Ipv4Addr::new(10, 90, 0, 0))
        );
    }

    #[test]
    fn refuses_bad_subnets() {
        for bad in ["10.0.0.0", "10.0.0.0/33", "10.0.0/8", "x/8", "10.0.0.0/x"] {
            assert!(bad.parse::<Subnet>().is_err(), "{bad}");
        }
        assert_eq!("0.0.0.0/0".parse::<Subnet>().unwrap().size(), 1 << 32);
    }
}
