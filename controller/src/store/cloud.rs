//! The VPC routes Tessera wrote (its ownership record), written by the lease holder under its
//! fencing token right after each call that changed a table.

use std::collections::BTreeMap;

use ipnet::IpNet;
use sqlx::Row;
use tessera_cloud::vpc::Target;

use super::{Result, Store, StoreError};

impl Store {
    /// What Tessera wrote in `table`.
    pub async fn cloud_routes(&self, table: &str) -> Result<BTreeMap<IpNet, Target>> {
        let rows =
            sqlx::query("SELECT destination, target FROM cloud_routes WHERE route_table = $1").bind(table).fetch_all(&self.pool).await?;
        let mut out = BTreeMap::new();
        for r in rows {
            let (destination, target): (String, String) = (r.try_get("destination")?, r.try_get("target")?);
            let destination: IpNet =
                destination.parse().map_err(|_| StoreError::Corrupt(format!("cloud route destination `{destination}`")))?;
            let target = Target::from_ec2_id(&target).map_err(StoreError::Corrupt)?;
            out.insert(destination, target);
        }
        Ok(out)
    }

    /// Record that `destination` in `table` now points at `target` (`None`: Tessera deleted it),
    /// if the writer lease still carries `fence`.
    pub async fn record_cloud_route(&self, table: &str, destination: IpNet, target: Option<&Target>, fence: i64) -> Result<()> {
        let mut tx = self.write().await?;
        super::lease::check_fence(&mut tx, fence).await?;
        sqlx::query("DELETE FROM cloud_routes WHERE route_table = $1 AND destination = $2")
            .bind(table)
            .bind(destination.to_string())
            .execute(&mut *tx)
            .await?;
        let id = match target {
            Some(Target::Instance(id) | Target::Interface(id)) => Some(id),
            Some(Target::Other(kind, _)) => return Err(StoreError::invalid("target", format!("Tessera never points routes at a {kind}"))),
            None => None,
        };
        if let Some(id) = id {
            sqlx::query("INSERT INTO cloud_routes (route_table, destination, target) VALUES ($1, $2, $3)")
                .bind(table)
                .bind(destination.to_string())
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
