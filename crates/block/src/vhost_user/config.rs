//! What the device tells the driver about itself: virtio feature bits and
//! the virtio-blk configuration space (virtio 1.2, 5.2.3-5.2.4).

/// Feature bits this device offers.
pub mod feature {
    /// Largest segment in `size_max`.
    pub const BLK_SIZE_MAX: u32 = 1;
    /// Maximum segments per request in `seg_max`.
    pub const BLK_SEG_MAX: u32 = 2;
    /// Read-only device.
    pub const BLK_RO: u32 = 5;
    /// Block size in `blk_size`.
    pub const BLK_BLK_SIZE: u32 = 6;
    /// FLUSH requests.
    pub const BLK_FLUSH: u32 = 9;
    /// Several queues (`num_queues`).
    pub const BLK_MQ: u32 = 12;
    /// DISCARD requests.
    pub const BLK_DISCARD: u32 = 13;
    /// WRITE_ZEROES requests.
    pub const BLK_WRITE_ZEROES: u32 = 14;
    /// vhost: the back end logs the guest pages it writes (live migration).
    pub const LOG_ALL: u32 = 26;
    /// Indirect descriptor tables.
    pub const RING_INDIRECT_DESC: u32 = 28;
    /// used_event/avail_event notification suppression.
    pub const RING_EVENT_IDX: u32 = 29;
    /// vhost-user: protocol features are negotiated.
    pub const PROTOCOL_FEATURES: u32 = 30;
    /// Virtio 1.x.
    pub const VERSION_1: u32 = 32;
}

/// What the configuration space is built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlkConfig {
    /// Disk size in bytes.
    pub size: u64,
    /// Logical block size.
    pub block_size: u32,
    /// Queues.
    pub queues: u16,
    /// Largest segment count per request.
    pub seg_max: u32,
    /// Refuse writes.
    pub read_only: bool,
}

/// Largest segment a driver may give: with `seg_max` segments this bounds a
/// request's data (see [`BlkConfig::max_request`]).
pub const SIZE_MAX: u32 = 128 << 10;

/// Largest DISCARD or WRITE_ZEROES range, in sectors (1 GiB).
pub const MAX_RANGE_SECTORS: u32 = 1 << 21;

impl BlkConfig {
    /// The feature bits to offer.
    pub fn features(&self) -> u64 {
        let mut f = [
            feature::BLK_SIZE_MAX,
            feature::BLK_SEG_MAX,
            feature::BLK_BLK_SIZE,
            feature::BLK_FLUSH,
            feature::LOG_ALL,
            feature::RING_INDIRECT_DESC,
            feature::RING_EVENT_IDX,
            feature::PROTOCOL_FEATURES,
            feature::VERSION_1,
        ]
        .iter()
        .fold(0u64, |acc, b| acc | 1 << b);
        if self.read_only {
            f |= 1 << feature::BLK_RO;
        } else {
            f |= 1 << feature::BLK_DISCARD | 1 << feature::BLK_WRITE_ZEROES;
        }
        if self.queues > 1 {
            f |= 1 << feature::BLK_MQ;
        }
        f
    }

    /// The most data one request can carry from a driver that keeps to
    /// `size_max` and `seg_max`; larger ones are refused.
    pub fn max_request(&self) -> u64 {
        u64::from(self.seg_max) * u64::from(SIZE_MAX)
    }

    /// The 60-byte `struct virtio_blk_config`.
    pub fn space(&self) -> [u8; 60] {
        let mut c = [0u8; 60];
        let put = |c: &mut [u8; 60], at: usize, v: &[u8]| c[at..at + v.len()].copy_from_slice(v);
        put(&mut c, 0, &(self.size / 512).to_le_bytes()); // capacity
        put(&mut c, 8, &SIZE_MAX.to_le_bytes());
        put(&mut c, 12, &self.seg_max.to_le_bytes());
        put(&mut c, 20, &self.block_size.to_le_bytes());
        // min_io_size, in blocks.
        put(&mut c, 26, &1u16.to_le_bytes());
        put(&mut c, 34, &self.queues.to_le_bytes());
        let align = (self.block_size / 512).max(1);
        for at in [36, 48] {
            put(&mut c, at, &MAX_RANGE_SECTORS.to_le_bytes()); // max sectors
            put(&mut c, at + 4, &1u32.to_le_bytes()); // one range per request
        }
        put(&mut c, 44, &align.to_le_bytes()); // discard_sector_alignment
        c[56] = 1; // write_zeroes_may_unmap
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn space_and_features() {
        let cfg = BlkConfig {
            size: 1 << 30,
            block_size: 4096,
            queues: 2,
            seg_max: 126,
            read_only: false,
        };
        let c = cfg.space();
        assert_eq!(u64::from_le_bytes(c[0..8].try_into().unwrap()), 2 << 20);
        assert_eq!(u32::from_le_bytes(c[20..24].try_into().unwrap()), 4096);
        assert_eq!(u16::from_le_bytes(c[34..36].try_into().unwrap()), 2);
        assert_eq!(u32::from_le_bytes(c[44..48].try_into().unwrap()), 8);
        let f = cfg.features();
        assert_ne!(f & 1 << feature::BLK_MQ, 0);
        assert_ne!(f & 1 << feature::BLK_DISCARD, 0);
        assert_eq!(f & 1 << feature::BLK_RO, 0);
        let ro = BlkConfig {
            read_only: true,
            queues: 1,
            ..cfg
        };
        assert_ne!(ro.features() & 1 << feature::BLK_RO, 0);
        assert_eq!(
            ro.features() & (1 << feature::BLK_DISCARD | 1 << feature::BLK_MQ),
            0
        );
    }
}
