//! The VPC routes Tessera wrote (its ownership record), written by the lease holder under its
//! fencing token: before each call that changes a table (`begin_cloud_route`), and once EC2
//! answered or a pass found how an unanswered call ended (`settle_cloud_route`).

use ipnet::IpNet;
use sqlx::Row;
use tessera_cloud::vpc::{Owned, Target, Written};

use super::{Result, Store, StoreError};

fn ec2_id(target: &Target) -> Result<&str> {
    match target {
        Target::Instance(id) | Target::Interface(id) => Ok(id),
        Target::Other(kind, _) => Err(StoreError::invalid("target", format!("Tessera never points routes at a {kind}"))),
    }
}

fn target(id: &str) -> Result<Target> {
    Target::from_ec2_id(id).map_err(StoreError::Corrupt)
}

impl Store {
    /// What Tessera wrote in `table`.
    pub async fn cloud_routes(&self, table: &str) -> Result<Owned> {
        let rows = sqlx::query("SELECT destination, target, confirmed, previous FROM cloud_routes WHERE route_table = $1")
            .bind(table)
            .fetch_all(&self.pool)
            .await?;
        let mut out = Owned::new();
        for r in rows {
            let destination: String = r.try_get("destination")?;
            let destination: IpNet =
                destination.parse().map_err(|_| StoreError::Corrupt(format!("cloud route destination `{destination}`")))?;
            let previous: Option<String> = r.try_get("previous")?;
            let written = Written {
                target: target(r.try_get("target")?)?,
                confirmed: r.try_get::<i64, _>("confirmed")? != 0,
                previous: previous.as_deref().map(target).transpose()?,
            };
            out.insert(destination, written);
        }
        Ok(out)
    }

    /// Record, before the call, that `destination` in `table` is being pointed at `target`, if
    /// the writer lease still carries `fence` (the last check before a call goes out). The
    /// target it had, if EC2 confirmed one, is kept as the previous one.
    pub async fn begin_cloud_route(&self, table: &str, destination: IpNet, target: &Target, fence: i64) -> Result<()> {
        let mut tx = self.write().await?;
        super::lease::check_fence(&mut tx, fence).await?;
        let before = sqlx::query("SELECT target, confirmed, previous FROM cloud_routes WHERE route_table = $1 AND destination = $2")
            .bind(table)
            .bind(destination.to_string())
            .fetch_optional(&mut *tx)
            .await?;
        let previous: Option<String> = match before {
            Some(r) if r.try_get::<i64, _>("confirmed")? != 0 => Some(r.try_get("target")?),
            Some(r) => r.try_get("previous")?,
            None => None,
        };
        sqlx::query("DELETE FROM cloud_routes WHERE route_table = $1 AND destination = $2")
            .bind(table)
            .bind(destination.to_string())
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO cloud_routes (route_table, destination, target, confirmed, previous) VALUES ($1, $2, $3, 0, $4)")
            .bind(table)
            .bind(destination.to_string())
            .bind(ec2_id(target)?)
            .bind(previous)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Record that `destination` in `table` points at `target`, confirmed (`None`: the route is
    /// gone and no longer Tessera's), if the writer lease still carries `fence`.
    pub async fn settle_cloud_route(&self, table: &str, destination: IpNet, target: Option<&Target>, fence: i64) -> Result<()> {
        let mut tx = self.write().await?;
        super::lease::check_fence(&mut tx, fence).await?;
        sqlx::query("DELETE FROM cloud_routes WHERE route_table = $1 AND destination = $2")
            .bind(table)
            .bind(destination.to_string())
            .execute(&mut *tx)
            .await?;
        if let Some(target) = target {
            sqlx::query("INSERT INTO cloud_routes (route_table, destination, target, confirmed) VALUES ($1, $2, $3, 1)")
                .bind(table)
                .bind(destination.to_string())
                .bind(ec2_id(target)?)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
